// SMTP AUTH mechanisms nodemailer lacks (SCRAM) or ties to its own OAuth client (XOAUTH2), as customAuth handlers.
import { ProtocolError } from '../errors.ts'
import { ScramClient, xoauth2Response, type Credentials } from './sasl.ts'
import type { CustomAuthContext } from './smtp-session.ts'

/** SCRAM and XOAUTH2 through nodemailer's customAuth hook (it has no SCRAM, and XOAUTH2 wants an OAuth client). */
export function customAuth(
  auth: Credentials | undefined,
): Record<string, (ctx: CustomAuthContext) => Promise<void>> {
  if (!auth) return {}
  const scram = (mechanism: 'SCRAM-SHA-1' | 'SCRAM-SHA-256') => async (c: CustomAuthContext) => {
    const client = new ScramClient(mechanism, auth.username, auth.password?.reveal() ?? '')
    const first = await c.sendCommand(`AUTH ${mechanism} ${client.first()}`)
    if (first.status !== 334) throw new ProtocolError('334', first.response, first.status)
    const final = await c.sendCommand(await client.final(first.text.trim()))
    if (final.status === 334) {
      client.verify(final.text.trim())
      const done = await c.sendCommand('')
      if (done.status !== 235) throw new ProtocolError('235', done.response, done.status)
    } else if (final.status !== 235) {
      throw new ProtocolError('235', final.response, final.status)
    }
  }
  return {
    'SCRAM-SHA-256': scram('SCRAM-SHA-256'),
    'SCRAM-SHA-1': scram('SCRAM-SHA-1'),
    XOAUTH2: async (c) => {
      const reply = await c.sendCommand(
        `AUTH XOAUTH2 ${xoauth2Response(auth.username, auth.oauth2_token?.reveal() ?? '')}`,
      )
      if (reply.status === 334) {
        // The server's error details come as a 334 challenge; an empty line ends the exchange (RFC 7628 3.2.3).
        const end = await c.sendCommand('')
        throw new ProtocolError('235', end.response, end.status)
      }
      if (reply.status !== 235) throw new ProtocolError('235', reply.response, reply.status)
    },
  }
}
