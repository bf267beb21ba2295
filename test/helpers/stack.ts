// The real Postfix + Dovecot started by scripts/with-mailstack.sh (ports, CA, users).
import { join } from 'node:path'

export interface MailStack {
  dir: string
  ca: string
  ports: {
    smtp: number
    submission: number
    smtps: number
    imap: number
    imaps: number
    pop3: number
    pop3s: number
  }
  users: { probe: [string, string]; alice: [string, string]; spam: [string, string] }
  /** Accepted by Postfix and silently discarded. */
  voidAddress: string
}

/** The running stack; throws (never skips) when the tests were started without it. */
export function mailStack(): MailStack {
  const dir = process.env['MAILSTACK_DIR']
  if (!dir)
    throw new Error('MAILSTACK_DIR is not set: run integration tests through `npm run test:integration`')
  const base = Number(process.env['MAILSTACK_PORT_BASE'] ?? '10000')
  return {
    dir,
    ca: join(dir, 'tls', 'ca.crt'),
    ports: {
      smtp: base + 25,
      submission: base + 587,
      smtps: base + 465,
      imap: base + 143,
      imaps: base + 993,
      pop3: base + 110,
      pop3s: base + 995,
    },
    users: {
      probe: ['probe@mail.test', 'probe-secret'],
      alice: ['alice@mail.test', 'alice-secret'],
      spam: ['spam@mail.test', 'spam-secret'],
    },
    voidAddress: 'void@mail.test',
  }
}
