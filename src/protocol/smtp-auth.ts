// SMTP AUTH mechanisms nodemailer lacks (SCRAM, OAUTHBEARER) or ties to its own OAuth client (XOAUTH2), as customAuth handlers.
import { ProtocolError } from '../errors.ts'
import { b64, oauthbearerResponse, ScramClient, xoauth2Response, type Credentials } from './sasl.ts'
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
  /** XOAUTH2 and OAUTHBEARER: the token in the initial response; a failure's details come as a 334 challenge. */
  const bearer = (mechanism: 'XOAUTH2' | 'OAUTHBEARER') => async (c: CustomAuthContext) => {
    const respond = mechanism === 'XOAUTH2' ? xoauth2Response : oauthbearerResponse
    const reply = await c.sendCommand(
      `AUTH ${mechanism} ${respond(auth.username, auth.oauth2_token?.reveal() ?? '')}`,
    )
    if (reply.status === 334) {
      // An empty line (XOAUTH2) or a lone 0x01 (OAUTHBEARER, RFC 7628 3.2.3) ends the exchange.
      const end = await c.sendCommand(mechanism === 'XOAUTH2' ? '' : b64('\x01'))
      throw new ProtocolError('235', end.response, end.status)
    }
    if (reply.status !== 235) throw new ProtocolError('235', reply.response, reply.status)
  }
  return {
    'SCRAM-SHA-256': scram('SCRAM-SHA-256'),
    'SCRAM-SHA-1': scram('SCRAM-SHA-1'),
    XOAUTH2: bearer('XOAUTH2'),
    OAUTHBEARER: bearer('OAUTHBEARER'),
  }
}
