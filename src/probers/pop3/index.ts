// The pop3 prober: banner, CAPA, STLS or implicit TLS, login, STAT (and UIDL/LIST), QUIT; every command timed.
import { POP3_DIALOGUE_METRICS, openPop3, recordStat } from '../../dialogues/pop3.ts'
import { defineProber } from '../../prober.ts'
import { credentialLeg, Pop3SettingsSchema, wellKnownPort } from '../../settings.ts'

export const pop3Prober = defineProber({
  name: 'pop3',
  settings: Pop3SettingsSchema,
  defaultPort: (pop3) => wellKnownPort.pop3(pop3.tls),
  credentialLegs: (pop3) => credentialLeg(['pop3'], pop3),
  sendsMail: () => false,
  metrics: POP3_DIALOGUE_METRICS,
  async probe(target, module, ctx) {
    const settings = module.pop3
    const { client, phase } = await openPop3(target, settings, ctx)
    try {
      const stat = await phase('stat', () => client.stat())
      recordStat(ctx, stat)
      if (settings.list)
        await phase('list', async () => {
          // UIDL is optional (RFC 1939 7): skip it only when CAPA says the server lacks it.
          const uids = client.capabilities?.has('UIDL') === false ? undefined : await client.uidl()
          const sizes = await client.list()
          ctx.logger.debug('listed messages', { uidl: uids?.length, list: sizes.length })
        })
      await phase('quit', () => client.quit())
    } finally {
      client.close()
    }
  },
})
