// SmtpSession: nodemailer's SMTPConnection on our own socket, its transaction log turned into timed phases.
// Every use of nodemailer internals is in this file (see the comments where they are touched).
import type net from 'node:net'
import type tls from 'node:tls'
import SMTPConnection from 'nodemailer/lib/smtp-connection'
import { DeadlineError, ProtocolError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import { abortable } from './abort.ts'
import { afterTicket, checkVerified, keepPeer, tlsOptions, type TlsConfig } from './connection.ts'
import { parseReply, type SmtpReply } from './smtp-reply.ts'

export type SmtpPhase =
  | 'token'
  | 'resolve'
  | 'connect'
  | 'tls'
  | 'banner'
  | 'ehlo'
  | 'starttls'
  | 'ehlo_tls'
  | 'auth'
  | 'mail'
  | 'rcpt'
  | 'data'
  | 'quit'

export interface SessionHooks {
  /** Adds a measured duration to a phase. */
  addPhase(phase: SmtpPhase, seconds: number): void
  /** The phase the dialogue is in now (for failures and the deadline). */
  enterPhase(phase: SmtpPhase): void
  /** Every complete server reply, in order. */
  onReply(phase: SmtpPhase | 'banner', reply: SmtpReply, raw: string): void
  /** The socket after a STARTTLS handshake, before anything is sent over it. */
  onTls(socket: tls.TLSSocket): void
}

/**
 * Internals of SMTPConnection we rely on (nodemailer is pinned exactly in package.json; guarded by
 * test/unit/library-internals.test.ts; README "Library internals" says why each is needed).
 */
interface Internals {
  _socket: net.Socket | tls.TLSSocket
  _supportedExtensions: string[]
  _upgradeConnection(cb: (err: Error | null, secured?: boolean) => void): void
}

export interface CustomAuthContext {
  sendCommand(cmd: string): Promise<{ status: number; code?: string; text: string; response: string }>
}

type NodemailerError = Error & { code?: string; command?: string; response?: string; responseCode?: number }

/** Largest server reply accepted (nodemailer's maxResponseSize; its default is 1 MiB). */
export const MAX_REPLY_BYTES = 64 * 1024

const VERB_PHASE: Record<string, SmtpPhase> = {
  EHLO: 'ehlo',
  HELO: 'ehlo',
  STARTTLS: 'starttls',
  AUTH: 'auth',
  MAIL: 'mail',
  RCPT: 'rcpt',
  DATA: 'data',
  QUIT: 'quit',
}

/** The phase of a refused mail transaction command, by the verb nodemailer names in its error. */
const ENVELOPE_PHASE: Record<string, SmtpPhase | undefined> = { MAIL: 'mail', RCPT: 'rcpt', DATA: 'data' }

export class SmtpSession {
  readonly conn: SMTPConnection
  readonly #hooks: SessionHooks
  readonly #logger: Logger
  readonly #signal: AbortSignal
  readonly #tlsConfig: TlsConfig
  /** Given to nodemailer for STARTTLS; its identity check keeps the peer certificate (keepPeer). */
  readonly #tlsOptions: tls.ConnectionOptions
  /** Commands sent and not yet answered: SMTP answers in order, also with PIPELINING and AUTH continuations. */
  readonly #pending: { t: number; phase: SmtpPhase }[] = []
  #bannerStart = performance.now()
  #sawBanner = false
  #tlsDone = false
  #phase: SmtpPhase = 'banner'
  #failure: Error | undefined
  #failureWaiters: ((err: Error) => void)[] = []
  #quitSent = false
  #closing = false
  /** EHLO replies as received: before and after STARTTLS. */
  readonly ehloReplies: { tls: boolean; reply: string }[] = []

  constructor(options: {
    socket: net.Socket
    host: string
    secured: boolean
    mode: 'none' | 'starttls' | 'starttls_opportunistic' | 'implicit'
    tlsConfig: TlsConfig
    ehloName: string
    signal: AbortSignal
    logger: Logger
    hooks: SessionHooks
    customAuth: Record<string, (ctx: CustomAuthContext) => Promise<void>>
  }) {
    this.#hooks = options.hooks
    this.#logger = options.logger
    this.#signal = options.signal
    this.#tlsConfig = options.tlsConfig
    this.#tlsDone = options.secured
    this.#tlsOptions = tlsOptions(options.host, options.tlsConfig)
    const log = (entry: { tnx?: string } | undefined, text?: unknown) => {
      this.#onLog(entry?.tnx, typeof text === 'string' ? text : '')
    }
    const logger = {
      trace: log,
      debug: log,
      info: log,
      warn: log,
      error: log,
      fatal: log,
      level: () => undefined,
    }
    const idle = 3600_000 // our signal is the deadline; nodemailer's own timers must never fire first
    this.conn = new SMTPConnection({
      connection: options.socket,
      secure: options.secured,
      secured: options.secured,
      host: options.host,
      name: options.ehloName,
      ignoreTLS: options.mode === 'none',
      opportunisticTLS: options.mode === 'starttls_opportunistic',
      tls: this.#tlsOptions,
      connectionTimeout: idle,
      greetingTimeout: idle,
      socketTimeout: idle,
      logger: logger as never,
      transactionLog: true,
      // A reply (even a multi-line EHLO) is a few hundred bytes; a server that never ends one is cut off.
      maxResponseSize: MAX_REPLY_BYTES,
      customAuth: Object.fromEntries(
        Object.entries(options.customAuth).map(([name, handler]) => [customName(name), handler]),
      ) as never,
    })
    // Mandatory: SMTPConnection emits connection errors; without a listener Node kills the process.
    this.conn.on('error', (err: Error) => {
      this.#fail(err)
    })
    this.conn.on('end', () => {
      this.#fail(new Error('connection closed by server'))
    })
    this.#wrapUpgrade()
    options.signal.addEventListener('abort', () => this.close(), { once: true })
  }

  /**
   * nodemailer upgrades the socket itself after STARTTLS (internal _upgradeConnection). We wrap it to time
   * the handshake, check the certificate ourselves (so a bad one fails in phase tls with its reason),
   * and wait for the TLS 1.3 session ticket before EHLO: sending at once makes Postfix hold the EHLO
   * reply ~40 ms for a delayed ACK, which the probe would report as server latency.
   * test/unit/library-internals.test.ts fails if nodemailer (pinned in package.json) changes it.
   */
  #wrapUpgrade() {
    const internals = this.conn as unknown as Internals
    const original = internals._upgradeConnection.bind(this.conn)
    internals._upgradeConnection = (cb) => {
      this.#enter('tls')
      const start = performance.now()
      original((err, secured) => {
        const socket = internals._socket as tls.TLSSocket
        if (err || !secured) {
          this.#hooks.addPhase('tls', (performance.now() - start) / 1000)
          cb(err, secured)
          return
        }
        // Phase tls is the handshake; the ticket wait after it is the client's own (debug line only).
        const handshakeMs = performance.now() - start
        this.#hooks.addPhase('tls', handshakeMs / 1000)
        keepPeer(socket, this.#tlsOptions)
        const proceed = () => {
          this.#tlsDone = true
          try {
            this.#hooks.onTls(socket)
            checkVerified(socket, this.#tlsConfig)
          } catch (verifyErr) {
            this.#fail(verifyErr as Error)
            cb(verifyErr as Error)
            return
          }
          cb(null, secured)
        }
        // The server speaking first is not watched for: after STARTTLS the session is back at the point just
        // after the greeting (RFC 3207 4.2), so the client speaks next; and nodemailer reads the socket itself.
        afterTicket(socket, handshakeMs, this.#logger, proceed)
      })
    }
  }

  #enter(phase: SmtpPhase) {
    this.#phase = phase
    this.#hooks.enterPhase(phase)
  }

  get phase(): SmtpPhase {
    return this.#phase
  }

  #onLog(tnx: string | undefined, text: string) {
    const now = performance.now()
    if (tnx === 'client' && this.#closing) {
      this.#logger.debug(`C: ${text}`)
      return
    }
    if (tnx === 'client') {
      const verb = /^([A-Za-z]+)\b/.exec(text)?.[1]?.toUpperCase() ?? ''
      let phase: SmtpPhase = VERB_PHASE[verb] ?? 'auth' // an AUTH continuation line carries no verb
      // The EHLO after STARTTLS; with implicit TLS the only EHLO is plain 'ehlo'.
      if (phase === 'ehlo' && this.#tlsDone && this.ehloReplies.length > 0) phase = 'ehlo_tls'
      this.#pending.push({ t: now, phase })
      this.#enter(phase)
      this.#logger.debug(`C: ${phase === 'auth' ? redactAuth(text) : text}`)
      return
    }
    if (tnx !== 'server') return
    for (const line of text.split('\n')) this.#logger.debug(`S: ${line}`)
    if (this.#closing) return // the closing QUIT of a failed probe: its 221 must not hide why it failed
    const reply = parseReply(text)
    const command = this.#pending.shift()
    let phase: SmtpPhase
    if (!command) {
      if (this.#sawBanner) return // an unsolicited line (e.g. 421 before closing); the error says the rest
      this.#sawBanner = true
      phase = 'banner'
      this.#hooks.addPhase('banner', (now - this.#bannerStart) / 1000)
    } else {
      phase = command.phase
      this.#hooks.addPhase(phase, (now - command.t) / 1000)
      if (phase === 'ehlo' || phase === 'ehlo_tls') this.ehloReplies.push({ tls: this.#tlsDone, reply: text })
      // After 354 the message is sent without a logged command; its final reply belongs to DATA.
      if (phase === 'data' && reply?.code === 354) this.#pending.push({ t: now, phase: 'data' })
    }
    if (reply) this.#hooks.onReply(phase, reply, text)
  }

  #fail(err: Error) {
    this.#failure ??= err
    for (const waiter of this.#failureWaiters.splice(0)) waiter(this.#failure)
  }

  /** Runs a nodemailer call that reports by callback, failing on connection errors or the deadline. */
  #call<T>(start: (done: (err: Error | null, value?: T) => void) => void): Promise<T> {
    const promise = new Promise<T>((resolve, reject) => {
      if (this.#failure) {
        reject(this.#failure)
        return
      }
      this.#failureWaiters.push(reject)
      start((err, value) => {
        if (err) reject(err)
        else resolve(value as T)
      })
    })
    return abortable(promise, this.#signal).catch((err: unknown) => {
      throw this.#explain(err)
    })
  }

  /** nodemailer's error as our ProtocolError when the server answered, else as is. */
  #explain(err: unknown): Error {
    if (err instanceof DeadlineError || !(err instanceof Error)) return err as Error
    const e = err as NodemailerError
    if (e.response && e.responseCode) {
      // With PIPELINING, MAIL, RCPT and DATA all went out before the first reply: the phase is the
      // command that was refused (nodemailer names it), not the last one sent.
      const refused = ENVELOPE_PHASE[e.command?.split(' ')[0] ?? '']
      if (refused) this.#enter(refused)
      const reply = e.response.split('\n').pop() ?? e.response
      return new ProtocolError(
        e.command ? `success for ${e.command.split(' ')[0] ?? ''}` : 'success',
        reply,
        e.responseCode,
      )
    }
    return e
  }

  /** Greeting, EHLO, and (as configured) STARTTLS + EHLO again. */
  connect(): Promise<void> {
    this.#bannerStart = performance.now()
    this.#enter('banner')
    return this.#call<undefined>((done) => {
      this.conn.connect((err?: Error | null) => {
        done(err ?? null)
      })
    })
  }

  login(auth: { user: string; pass: string | undefined; method: string }): Promise<void> {
    this.#enter('auth')
    return this.#call<undefined>((done) => {
      this.conn.login({ user: auth.user, pass: auth.pass ?? '', method: customName(auth.method) }, (err) => {
        done(err ?? null)
      })
    })
  }

  /** MAIL, RCPT and DATA as separate round trips unless pipelining is wanted. */
  send(
    envelope: { from: string; to: string[] },
    message: string,
    pipelining: boolean,
  ): Promise<SMTPConnection.SentMessageInfo> {
    if (!pipelining) {
      // nodemailer has no option for this; without PIPELINING in its list it waits for each reply.
      const internals = this.conn as unknown as Internals
      internals._supportedExtensions = internals._supportedExtensions.filter((x) => x !== 'PIPELINING')
    }
    this.#enter('mail')
    return this.#call<SMTPConnection.SentMessageInfo>((done) => {
      this.conn.send(envelope, message, (err, info) => {
        done(err, info)
      })
    })
  }

  /**
   * After a failure: QUIT if the server is still there and the deadline allows, waiting at most
   * `waitMs` for its answer, so that servers log a clean end of session (Exim logs a lost
   * connection otherwise). Never throws, and counts in no phase.
   */
  async quitQuietly(waitMs: number): Promise<void> {
    if (this.#failure || this.#quitSent || this.#signal.aborted || this.socket.destroyed) return
    this.#quitSent = true
    this.#closing = true
    const ended = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, waitMs)
      const done = () => {
        clearTimeout(timer)
        this.#signal.removeEventListener('abort', done)
        resolve()
      }
      this.conn.once('end', done)
      this.#signal.addEventListener('abort', done, { once: true })
    })
    try {
      this.conn.quit()
    } catch {
      return // nodemailer refused: the connection is already going
    }
    await ended
  }

  /** QUIT and wait for the server to close. */
  async quit(): Promise<void> {
    this.#quitSent = true
    this.#enter('quit')
    // The server may already have closed (e.g. right after accepting the mail): 'end' has been and
    // will not come again, so waiting for it would only run into the deadline.
    if (this.#failure) {
      this.#logger.debug('the server closed the connection before QUIT')
      return
    }
    const ended = new Promise<void>((resolve) => this.conn.once('end', resolve))
    this.conn.quit()
    await abortable(ended, this.#signal)
  }

  get secure(): boolean {
    return this.conn.secure
  }

  /** The TLS socket after an upgrade (public in nodemailer's d.ts). */
  get socket(): net.Socket | tls.TLSSocket {
    return (this.conn as unknown as Internals)._socket
  }

  close(): void {
    try {
      this.conn.close()
    } catch {
      // already closed
    }
    this.socket.destroy()
  }
}

/**
 * nodemailer treats a method named XOAUTH2 specially: without its own OAuth2 token generator it
 * silently picks another mechanism. Our handler (which sends its own AUTH XOAUTH2 line) is therefore
 * registered under a private name.
 */
function customName(method: string): string {
  return method === 'XOAUTH2' ? 'MAILPROBE-XOAUTH2' : method
}

/** "AUTH PLAIN <payload>" -> "AUTH PLAIN <redacted>"; a continuation line -> "<redacted>". */
export function redactAuth(line: string): string {
  const m = /^(AUTH\s+\S+)(\s+\S.*)?$/i.exec(line)
  if (m) return m[2] ? `${m[1] ?? ''} <redacted>` : line
  return line === '' ? line : '<redacted>'
}
