// The soak's mix: the exporter modules it uses, the hostile helper process, and the order of its probes.
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import type { MailStack } from '../test/helpers/stack.ts'

/** Module timeout of the failure and flood modules (see SOAK_MODULES), in ms. */
export const SOAK_DEADLINE_MS = 2000
/** Modules the soak needs besides the stack's (appended to the exporter's config by bench.ts). */
export const SOAK_MODULES = `
  smtp_short:
    prober: smtp
    min_interval: 0s
    timeout: ${SOAK_DEADLINE_MS}ms
    smtp: { tls: none, ehlo: soak.example }
  pop3_short:
    prober: pop3
    min_interval: 0s
    timeout: ${SOAK_DEADLINE_MS}ms
    allowed_targets: [127.0.0.1]
    pop3: { tls: none, auth: { username: soak, password: soak-secret, allow_plaintext: true } }
  imap_short:
    prober: imap
    min_interval: 0s
    timeout: ${SOAK_DEADLINE_MS}ms
    allowed_targets: [127.0.0.1]
    imap: { tls: none, auth: { username: soak, password: soak-secret, allow_plaintext: true } }
`

export interface HostilePorts {
  closed: number
  silent: number
  greetingCloseSmtp: number
  greetingClosePop3: number
  greetingCloseImap: number
  pop3CapaFlood: number
  imapUntaggedFlood: number
  smtpEndlessEhlo: number
  longLine: number
}

export interface HostileServers {
  ports: HostilePorts
  /** Connections and bytes sent per server, asked from the helper. */
  stats(): Promise<unknown>
  stop(): void
}

/** Starts bench/hostile-servers.ts as its own process (so its floods cost neither exporter nor measurer). */
export async function startHostileServers(): Promise<HostileServers> {
  const child: ChildProcess = spawn(
    process.execPath,
    ['--import', 'tsx', new URL('./hostile-servers.ts', import.meta.url).pathname],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  )
  const lines = createInterface({ input: child.stdout! })
  const waiting: ((line: string) => void)[] = []
  lines.on('line', (line) => waiting.shift()?.(line))
  const nextLine = (ms: number) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('hostile servers: no answer')), ms)
      waiting.push((line) => {
        clearTimeout(timer)
        resolve(line)
      })
    })
  const { ports } = JSON.parse(await nextLine(30_000)) as { ports: HostilePorts }
  return {
    ports,
    stats: async () => {
      child.stdin!.write('stats\n')
      return (JSON.parse(await nextLine(5000)) as { stats: unknown }).stats
    },
    stop: () => {
      child.stdin!.end()
      setTimeout(() => child.kill(), 2000).unref()
    },
  }
}

type Protocol = 'smtp' | 'pop3' | 'imap'
const PROTOCOLS: readonly Protocol[] = ['smtp', 'pop3', 'imap']

export interface ProbeSpec {
  category: string
  module: string
  port: number
  expectSuccess: boolean
  /** Set for probes that can only end by the deadline or a bound (silent server, floods). */
  deadlineMs?: number
  flood: boolean
}

/**
 * One cycle of 20 probes, interleaved so that every stretch of 8 concurrent probes is mixed: 11 successes
 * against the real stack, 5 failures, 4 floods. Failures and the long line rotate over the three probers.
 */
export function cycle(stack: MailStack, hostile: HostilePorts, n: number): ProbeSpec[] {
  const p = PROTOCOLS[n % 3]!
  const q = PROTOCOLS[(n + 1) % 3]!
  const ok = (category: string, module: string, port: number): ProbeSpec => ({
    category,
    module,
    port,
    expectSuccess: true,
    flood: false,
  })
  const fail = (category: string, protocol: Protocol, port: number, deadline = false): ProbeSpec => ({
    category: `${category} (${protocol})`,
    module: `${protocol}_short`,
    port,
    expectSuccess: false,
    ...(deadline ? { deadlineMs: SOAK_DEADLINE_MS } : {}),
    flood: false,
  })
  const flood = (category: string, protocol: Protocol, port: number): ProbeSpec => ({
    category,
    module: `${protocol}_short`,
    port,
    expectSuccess: false,
    deadlineMs: SOAK_DEADLINE_MS,
    flood: true,
  })
  const greetingClose = {
    smtp: hostile.greetingCloseSmtp,
    pop3: hostile.greetingClosePop3,
    imap: hostile.greetingCloseImap,
  }
  const smtp = ok('stack: SMTP STARTTLS', 'smtp_starttls', stack.ports.submission)
  const smtpAuth = ok('stack: SMTP STARTTLS + AUTH', 'smtp_submission_auth', stack.ports.submission)
  const imap = ok('stack: IMAP STARTTLS + login', 'imap_login', stack.ports.imap)
  const pop3 = ok('stack: POP3 STLS + login', 'pop3_login', stack.ports.pop3)
  return [
    smtp,
    flood('flood: POP3 CAPA of 10 MiB', 'pop3', hostile.pop3CapaFlood),
    imap,
    fail('closed port', p, hostile.closed),
    pop3,
    fail('silent server', p, hostile.silent, true),
    smtpAuth,
    flood('flood: IMAP 10 MiB untagged after greeting', 'imap', hostile.imapUntaggedFlood),
    smtp,
    fail('closes after greeting', p, greetingClose[p]),
    imap,
    flood('flood: SMTP endless 250- EHLO', 'smtp', hostile.smtpEndlessEhlo),
    pop3,
    fail('closed port', q, hostile.closed),
    smtpAuth,
    flood(`flood: 10 MiB line, no newline (${p})`, p, hostile.longLine),
    imap,
    fail('closes after greeting', q, greetingClose[q]),
    smtp,
    pop3,
  ]
}
