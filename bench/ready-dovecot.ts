// A second mail stack for the tls-phase comparison on IMAP and POP3. In its default mode (the main stack's)
// Dovecot starts a login process for each connection (~10 ms), which lands in `banner` before STARTTLS but in
// `tls` with implicit TLS, where the client speaks first: so `tls` alone says nothing there. This stack runs
// Dovecot's high-performance mode (long-lived login processes, ready before a connection comes), so that
// both ways start the handshake with a server that is already listening for it.
import { execFileSync } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface ReadyDovecot {
  /** The stack's own CA (each stack makes one). */
  ca: string
  ports: { imap: number; imaps: number; pop3: number; pop3s: number }
}

const script = new URL('../scripts/mailstack.sh', import.meta.url).pathname

/** Where the stack lives and the ports it takes (base + standard port, as the main stack's). */
export function readyDovecot(dir: string, base: number): ReadyDovecot {
  return {
    ca: join(dir, 'tls', 'ca.crt'),
    ports: { imap: base + 143, imaps: base + 993, pop3: base + 110, pop3s: base + 995 },
  }
}

/** Starts the stack (scripts/mailstack.sh, profile fast) in a directory of its own; the result stops it. */
export function startReadyDovecot(base: number): { stack: ReadyDovecot; stop: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'mailprobe-ready-'))
  chmodSync(dir, 0o755) // the daemons' users must be able to enter it
  const run = (command: 'start' | 'stop') =>
    execFileSync('bash', [script, command, dir], {
      env: { ...process.env, MAILSTACK_PORT_BASE: String(base), MAILSTACK_PROFILE: 'fast' },
      stdio: ['ignore', 'ignore', 'pipe'],
      encoding: 'utf8',
    })
  const stop = () => {
    try {
      run('stop')
    } catch {
      // stopping is best effort (a half-started stack included): the bench's result stands either way
    }
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    run('start')
  } catch (err) {
    stop()
    const stderr = (err as { stderr?: string }).stderr ?? ''
    throw new Error(`the second mail stack (Dovecot ready at connect) did not start:\n${stderr}`, {
      cause: err,
    })
  }
  return { stack: readyDovecot(dir, base), stop }
}
