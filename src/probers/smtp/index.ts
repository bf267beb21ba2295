// The smtp prober: banner, EHLO, STARTTLS or implicit TLS, AUTH, optional test mail, QUIT; every command timed.
import type { SmtpModule } from '../../config.ts'
import { smtpConversation } from '../../dialogues/smtp.ts'
import type { Prober } from '../../prober.ts'
import { buildMessage } from '../../protocol/message.ts'

export const probeSmtp: Prober<SmtpModule> = async (target, module, ctx) => {
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
}
