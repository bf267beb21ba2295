// The smtp prober: banner, EHLO, STARTTLS or implicit TLS, AUTH, optional test mail, QUIT; every command timed.
import { SMTP_DIALOGUE_METRICS, smtpConversation } from '../../dialogues/smtp.ts'
import { defineProber } from '../../prober.ts'
import { buildMessage } from '../../protocol/message.ts'
import { credentialLeg, SmtpSettingsSchema, wellKnownPort } from '../../settings.ts'

export const smtpProber = defineProber({
  name: 'smtp',
  settings: SmtpSettingsSchema.prefault({}),
  defaultPort: (smtp) => wellKnownPort.smtp(smtp.tls),
  credentialLegs: (smtp) => credentialLeg(['smtp'], smtp),
  sendsMail: (smtp) => smtp.send !== undefined,
  mailExchangers: true,
  metrics: SMTP_DIALOGUE_METRICS,
  async probe(target, module, ctx) {
    const send = module.smtp.send
    const mail = send && {
      from: send.from,
      to: send.to,
      message: buildMessage({
        from: send.from,
        to: send.to,
        subject: send.subject,
        headers: send.headers,
        body: send.body,
      }),
    }
    await smtpConversation(target, module.smtp, ctx, { mail })
  },
})
