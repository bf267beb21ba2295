// The floor for cost goal 4: the SMTP STARTTLS dialogue the bench probes, spoken with node:net and node:tls
// alone from the bench process, so that `/probe` time minus this is what the exporter adds to Node itself.
import { readFileSync } from 'node:fs'
import net from 'node:net'
import tls from 'node:tls'
import { quantile } from './stats.ts'

export interface RawSmtpTarget {
  host: string
  port: number
  /** The CA file the bench's modules use. */
  ca: string
  /** Verified against the certificate, as the modules' `server_name`. */
  servername: string
  ehlo: string
}

export interface RawSmtpResult {
  conversations: number
  median: number
  p90: number
  p99: number
}

/** Gives up on a conversation after this long, so a stuck server fails the bench instead of hanging it. */
const TIMEOUT_MS = 5000
/** As the prober's wait for the TLS 1.3 session ticket (src/protocol/connection.ts): at most this long. */
const MAX_TICKET_WAIT_MS = 10

/**
 * The next whole reply on `socket`, which must have `code`. The server speaks only when spoken to, so one
 * listener per reply (attached before the command is written) sees every byte of it.
 */
function reply(socket: net.Socket, code: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = ''
    const done = (err?: Error) => {
      socket.off('data', onData).off('error', done).off('close', onClose)
      clearTimeout(timer)
      if (err) reject(err)
      else resolve(text)
    }
    const onClose = () => done(new Error(`connection closed, waiting for ${code}: ${JSON.stringify(text)}`))
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1')
      // A reply is complete with its last line: the code followed by a space, not a hyphen (RFC 5321 4.2.1).
      const last = /(?:^|\n)(\d{3})(?: [^\n]*)?\r?\n$/.exec(text)
      if (!last) return
      done(last[1] === String(code) ? undefined : new Error(`expected ${code}, got ${JSON.stringify(text)}`))
    }
    const timer = setTimeout(() => done(new Error(`no ${code} within ${TIMEOUT_MS} ms`)), TIMEOUT_MS)
    socket.on('data', onData).once('error', done).once('close', onClose)
  })
}

function command(socket: net.Socket, line: string, code: number): Promise<string> {
  const answer = reply(socket, code)
  socket.write(`${line}\r\n`)
  return answer
}

/**
 * TLS over `socket`, verified against `servername`, resolving once the client may speak: like the prober,
 * after the TLS 1.3 session ticket (or as long as the handshake took, at most 10 ms, when none comes).
 * Without that wait Postfix holds the EHLO reply ~40 ms for a delayed ACK, and the floor would be
 * that stall, not Node's cost.
 */
function upgrade(
  socket: net.Socket,
  target: RawSmtpTarget,
  context: tls.SecureContext,
): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const start = performance.now()
    const secure = tls.connect({ socket, servername: target.servername, secureContext: context })
    let ticket = false
    // Listening before the handshake ends is what makes Node ask OpenSSL for the ticket at all.
    secure.once('session', () => (ticket = true))
    secure.once('error', reject)
    secure.once('secureConnect', () => {
      secure.off('error', reject)
      let went = false
      const go = () => {
        if (went) return
        went = true
        setImmediate(() => resolve(secure)) // a write from inside a 'session' handler is lost on Node 20
      }
      if (ticket || secure.getProtocol() !== 'TLSv1.3') {
        go()
        return
      }
      const timer = setTimeout(go, Math.min(MAX_TICKET_WAIT_MS, Math.max(1, performance.now() - start)))
      secure.once('session', () => {
        clearTimeout(timer)
        go()
      })
    })
  })
}

/** One conversation: greeting, EHLO, STARTTLS, verified TLS, EHLO, QUIT, close. Resolves with its wall time. */
async function converse(target: RawSmtpTarget, context: tls.SecureContext): Promise<number> {
  const start = performance.now()
  const socket = net.connect({ host: target.host, port: target.port, noDelay: true })
  let stream: net.Socket = socket
  try {
    await reply(socket, 220)
    await command(socket, `EHLO ${target.ehlo}`, 250)
    await command(socket, 'STARTTLS', 220)
    stream = await upgrade(socket, target, context)
    await command(stream, `EHLO ${target.ehlo}`, 250)
    await command(stream, 'QUIT', 221)
  } finally {
    stream.destroy()
    socket.destroy()
  }
  return performance.now() - start
}

/**
 * `conversations` sequential conversations after 20 for warm-up, as the bench's sequential rows. One TLS
 * context for all of them, as the prober keeps one per tls_config.
 */
export async function measureRawSmtp(target: RawSmtpTarget, conversations: number): Promise<RawSmtpResult> {
  const context = tls.createSecureContext({ ca: readFileSync(target.ca) })
  for (let i = 0; i < 20; i++) await converse(target, context)
  const walls: number[] = []
  for (let i = 0; i < conversations; i++) walls.push(await converse(target, context))
  return {
    conversations,
    median: quantile(walls, 0.5),
    p90: quantile(walls, 0.9),
    p99: quantile(walls, 0.99),
  }
}
