// A scripted SMTP server for in-process tests: well-behaved by default, any reply replaceable, and it can
// hand each accepted message to the test (a round trip's shared in-memory mailbox).
import { certs } from './certs.ts'
import type { ScriptConnection } from './scripted.ts'

export interface SmtpFaults {
  banner?: string
  ehlo?: string
  starttls?: string | false
  auth?: string
  /** AUTH mechanisms on the EHLO after TLS (or the only one without TLS). */
  mechanisms?: string
  /** Whether AUTH is announced before STARTTLS. */
  authBeforeTls?: boolean
  mail?: string
  rcpt?: string
  data?: string
  final?: string
  pipelining?: boolean
  cert?: { cert: Buffer; key: Buffer }
  /** Called with each message the server accepts (CRLF lines, dot-unstuffed), before the final 250. */
  onMessage?: (raw: string) => void
}

/** A well-behaved SMTP server (STARTTLS, AUTH PLAIN/LOGIN/CRAM-MD5) whose reply in any phase can be replaced. */
export function smtpScript(f: SmtpFaults = {}) {
  return async (c: ScriptConnection) => {
    c.line(f.banner ?? '220 mx.test ESMTP ready')
    if (f.banner && !f.banner.startsWith('220')) return c.closed()
    let tls = false
    for (;;) {
      const line = await c.expect()
      const verb = line.split(' ')[0]?.toUpperCase()
      if (verb === 'EHLO') {
        if (f.ehlo) {
          c.line(f.ehlo)
          continue
        }
        const ext = ['250-mx.test', '250-SIZE 1000000']
        if (f.pipelining) ext.push('250-PIPELINING')
        if (!tls && f.starttls !== false) ext.push('250-STARTTLS')
        if (tls || f.authBeforeTls) ext.push(`250-AUTH ${f.mechanisms ?? 'PLAIN LOGIN CRAM-MD5'}`)
        ext.push('250 ENHANCEDSTATUSCODES')
        c.line(ext.join('\r\n'))
      } else if (verb === 'HELO') {
        c.line(f.ehlo ?? '250 mx.test')
      } else if (verb === 'STARTTLS') {
        if (typeof f.starttls === 'string') {
          c.line(f.starttls)
          continue
        }
        c.line('220 2.0.0 go ahead')
        await c.startTls(f.cert ?? certs().good)
        tls = true
      } else if (verb === 'AUTH') {
        const mech = line.split(' ')[1]?.toUpperCase()
        if (f.auth && (!f.auth.startsWith('mech:') || f.auth.startsWith(`mech:${mech ?? ''}:`))) {
          c.line(f.auth.replace(/^mech:[^:]+:/, ''))
          continue
        }
        if (mech === 'CRAM-MD5') {
          c.line('334 ' + Buffer.from('<1.2@mx.test>').toString('base64'))
          await c.expect()
        } else if (mech === 'LOGIN') {
          c.line('334 VXNlcm5hbWU6')
          await c.expect()
          c.line('334 UGFzc3dvcmQ6')
          await c.expect()
        }
        c.line('235 2.7.0 Authentication successful')
      } else if (verb === 'MAIL') c.line(f.mail ?? '250 2.1.0 Ok')
      else if (verb === 'RCPT') c.line(f.rcpt ?? '250 2.1.5 Ok')
      else if (verb === 'DATA') {
        if (f.data) {
          c.line(f.data)
          continue
        }
        c.line('354 End data with <CR><LF>.<CR><LF>')
        const message: string[] = []
        for (let text = await c.expect(); text !== '.'; text = await c.expect())
          message.push(text.startsWith('.') ? text.slice(1) : text)
        if (f.final === undefined || f.final.startsWith('250')) f.onMessage?.(message.join('\r\n') + '\r\n')
        c.line(f.final ?? '250 2.0.0 Ok: queued as ABC123')
      } else if (verb === 'QUIT') {
        c.line('221 2.0.0 Bye')
        c.close()
        return
      } else if (verb === 'RSET') c.line('250 Ok')
      else c.line('502 5.5.2 Error: command not recognized')
    }
  }
}
