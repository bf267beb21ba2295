// Sockets for probes: TCP connect and TLS (implicit or upgrade) bound to the probe's signal, and a CRLF line channel.
import net from 'node:net'
import tls from 'node:tls'
import { DeadlineError } from '../errors.ts'
import type { Logger } from '../logger.ts'

const TLS_VERSION = { TLS10: 'TLSv1', TLS11: 'TLSv1.1', TLS12: 'TLSv1.2', TLS13: 'TLSv1.3' } as const
export type TlsVersion = keyof typeof TLS_VERSION
export const TLS_VERSIONS = Object.keys(TLS_VERSION) as [TlsVersion, ...TlsVersion[]]

/** How a probe speaks TLS (a module's tls_config, files already read). */
export interface TlsConfig {
  ca?: Buffer | undefined
  cert?: Buffer | undefined
  key?: Buffer | undefined
  /** Verify against this name instead of the target host (and send it as SNI). */
  server_name?: string | undefined
  min_version?: TlsVersion | undefined
  max_version?: TlsVersion | undefined
  /** Finish the handshake whatever the certificate (for its facts); credentials still need verification. */
  insecure_skip_verify: boolean
}

/** The certificate did not verify; the handshake itself worked, so TLS facts are still known. */
export class TlsVerifyError extends Error {
  override name = 'TlsVerifyError'
  readonly reason: string
  constructor(reason: string) {
    super(`certificate verification failed: ${reason}`)
    this.reason = reason
  }
}

/** Destroys the socket when the signal aborts, so every pending read or write on it fails at once. */
export function bindSignal(socket: net.Socket, signal: AbortSignal): void {
  const onAbort = () => socket.destroy(new DeadlineError())
  if (signal.aborted) onAbort()
  else {
    signal.addEventListener('abort', onAbort, { once: true })
    socket.once('close', () => signal.removeEventListener('abort', onAbort))
  }
}

/** A TCP connection to `address`, from `source` when given (it must be of the same family). */
export function connectTcp(
  address: string,
  port: number,
  signal: AbortSignal,
  source?: string,
): Promise<net.Socket> {
  if (source !== undefined && net.isIP(source) !== net.isIP(address))
    return Promise.reject(
      new Error(
        `source_ip_address ${source} is IPv${net.isIP(source)}, but the target is IPv${net.isIP(address)} ${address}`,
      ),
    )
  return new Promise((resolve, reject) => {
    const socket = net.connect({
      host: address,
      port,
      noDelay: true,
      ...(source === undefined ? {} : { localAddress: source }),
    })
    // A socket error must never go unheard: later errors are seen by whoever reads the socket.
    socket.on('error', () => undefined)
    bindSignal(socket, signal)
    socket.once('error', reject)
    socket.once('connect', () => {
      socket.off('error', reject)
      resolve(socket)
    })
  })
}

function contextOptions(config: TlsConfig): tls.SecureContextOptions {
  return {
    ...(config.ca ? { ca: config.ca } : {}),
    ...(config.cert ? { cert: config.cert } : {}),
    ...(config.key ? { key: config.key } : {}),
    ...(config.min_version ? { minVersion: TLS_VERSION[config.min_version] } : {}),
    ...(config.max_version ? { maxVersion: TLS_VERSION[config.max_version] } : {}),
  }
}

/**
 * One SecureContext per tls_config, made on first use: otherwise every handshake builds its own
 * (OpenSSL context, CA store, key), a good part of a probe's CPU. Keyed weakly by the config object,
 * so a reloaded config brings new contexts and the old ones go with it. A shared context resumes no
 * sessions (Node keeps no client session cache in it): every probe still does a full handshake.
 */
const secureContexts = new WeakMap<TlsConfig, tls.SecureContext>()

/** The shared context, or undefined when the files do not make one (tls.connect then says why, as before). */
function sharedContext(config: TlsConfig): tls.SecureContext | undefined {
  let context = secureContexts.get(config)
  if (context) return context
  try {
    context = tls.createSecureContext(contextOptions(config))
  } catch {
    return undefined
  }
  secureContexts.set(config, context)
  return context
}

/** Where tlsOptions' identity check leaves the certificate Node built for it, and keepPeer puts it. */
const PEER = Symbol('detailed peer certificate')
type WithPeer = { [PEER]?: tls.DetailedPeerCertificate }

/**
 * TLS options for a probe. Verification is done by us after the handshake (checkVerified) so that a
 * bad certificate still yields its TLS facts and a clear error instead of a bare socket error.
 * Each result is for one connection: hand it to keepPeer with the socket once the handshake is done.
 */
export function tlsOptions(host: string, config: TlsConfig): tls.ConnectionOptions {
  const serverName = config.server_name ?? host
  const context = sharedContext(config)
  const options: tls.ConnectionOptions & WithPeer = {
    // Verify against server_name, or the target host; an IP target is verified against the IP SANs.
    host: serverName,
    ...(net.isIP(serverName) === 0 ? { servername: serverName } : {}),
    rejectUnauthorized: false,
    ...(context ? { secureContext: context } : contextOptions(config)),
    // Node builds the whole chain as objects for this check (~0.4 ms): kept for the TLS facts.
    checkServerIdentity: (name, cert) => {
      options[PEER] = cert as tls.DetailedPeerCertificate // typed short: Node passes getPeerCertificate(true)
      return tls.checkServerIdentity(name, cert)
    },
  }
  return options
}

/** After the handshake: the socket keeps the certificate its options' identity check was given. */
export function keepPeer(socket: tls.TLSSocket, options: tls.ConnectionOptions): void {
  const peer = (options as WithPeer)[PEER]
  if (peer) (socket as WithPeer)[PEER] = peer
}

/** The presented certificate with its chain: the one Node built for its identity check, if it did one. */
export function peerCertificate(socket: tls.TLSSocket): tls.DetailedPeerCertificate {
  return (socket as WithPeer)[PEER] ?? socket.getPeerCertificate(true)
}

/** Throws TlsVerifyError unless the peer verified or the module skips verification. */
export function checkVerified(socket: tls.TLSSocket, config: TlsConfig): void {
  if (socket.authorized || config.insecure_skip_verify) return
  throw new TlsVerifyError(String(socket.authorizationError))
}

/** TLS over an existing TCP socket (implicit TLS right after connect, or after STARTTLS/STLS). */
export function startTls(
  socket: net.Socket,
  host: string,
  config: TlsConfig,
  signal: AbortSignal,
): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const options = tlsOptions(host, config)
    const secure = tls.connect({ ...options, socket })
    secure.on('error', () => undefined)
    bindSignal(secure, signal)
    const fail = (err: Error) => {
      reject(describeTlsError(err))
    }
    secure.once('error', fail)
    secure.once('secureConnect', () => {
      secure.off('error', fail)
      keepPeer(secure, options)
      resolve(secure)
    })
  })
}

/** OpenSSL's words for "what came back was not a TLS record" (a cleartext server, or HTTP). */
const NOT_TLS =
  /wrong version number|packet length too long|unknown protocol|http request|record layer failure/i

/** The server did not answer the handshake with TLS; `cause` keeps OpenSSL's own text for debug output. */
export class NotTlsError extends Error {
  override name = 'NotTlsError'
}

/**
 * A handshake error as a person reads it: "server did not speak TLS" when OpenSSL saw no TLS
 * record at all (implicit TLS against a cleartext port), else the error as it is.
 */
export function describeTlsError(err: Error): Error {
  const code = (err as NodeJS.ErrnoException).code ?? ''
  if (NOT_TLS.test(`${code.replaceAll('_', ' ')} ${err.message}`))
    return new NotTlsError('server did not speak TLS (is this a cleartext port?)', { cause: err })
  return err
}

/**
 * Implicit TLS on a fresh TCP connection: handshake, report the TLS facts (`onTls`, before the check,
 * so a bad certificate is still described), then verify. On any failure both sockets are destroyed
 * at once: the connection must not linger until the server's idle timeout.
 */
export async function startVerifiedTls(
  socket: net.Socket,
  host: string,
  config: TlsConfig,
  signal: AbortSignal,
  onTls: (secure: tls.TLSSocket) => void,
): Promise<tls.TLSSocket> {
  let secure: tls.TLSSocket | undefined
  try {
    secure = await startTls(socket, host, config, signal)
    onTls(secure)
    checkVerified(secure, config)
    return secure
  } catch (err) {
    secure?.destroy()
    socket.destroy()
    throw err
  }
}

/** How the wait for the TLS 1.3 session ticket went (afterTicket): the client's own time, in no phase. */
export interface TicketWait {
  /** Milliseconds from the end of the handshake until the client spoke again. */
  ms: number
  /**
   * What ended it: the ticket came; the server spoke first (what it sends comes after any ticket it
   * sends, so none is coming); the wait ran out; or TLS 1.2, which has no such ticket to wait for.
   */
  ended: 'ticket' | 'server spoke' | 'timeout' | 'TLS 1.2'
}

/** The longest wait for a ticket: servers that send none (Exim) cost at most this. */
const MAX_TICKET_WAIT_MS = 10

const TICKET_WAIT_TEXT: Record<TicketWait['ended'], string> = {
  ticket: 'TLS session ticket arrived',
  'server spoke': 'the server spoke before any TLS session ticket; going on',
  timeout: 'no TLS session ticket; going on',
  'TLS 1.2': 'TLS 1.2: no session ticket to wait for',
}

/**
 * Calls `go` once the server's TLS 1.3 session ticket has arrived, so that our next command
 * piggybacks the ACK: a client that speaks at once makes Postfix hold its reply ~40 ms for our
 * delayed ACK (Nagle), which a probe would report as server latency. A server sends its ticket as soon
 * as it has our Finished, one round trip after the handshake ended here, and the handshake itself
 * took at least one: so the wait ends after as long as the handshake took (`handshakeMs`), at most
 * 10 ms, when no ticket is coming; and as soon as `serverSpoke()` says the server has sent something
 * (it would only after its ticket), when the caller can tell: data waiting unread in the socket or in
 * its reader. TLS 1.2 has no post-handshake ticket: `go` runs at once.
 * The wait is the client's own, in no phase (callers time the handshake alone as phase tls): the
 * debug transcript says how it went.
 */
export function afterTicket(
  socket: tls.TLSSocket,
  handshakeMs: number,
  logger: Logger,
  go: (wait: TicketWait) => void,
  serverSpoke?: () => boolean,
): void {
  const start = performance.now()
  const told = (wait: TicketWait) => {
    logger.debug(TICKET_WAIT_TEXT[wait.ended], { waited_ms: wait.ms.toFixed(2) })
    return wait
  }
  if (socket.getProtocol() !== 'TLSv1.3') {
    go(told({ ms: 0, ended: 'TLS 1.2' }))
    return
  }
  let done = false
  const proceed = (ended: TicketWait['ended']) => {
    if (done) return
    done = true
    clearTimeout(timer)
    if (watch) clearInterval(watch)
    socket.off('session', onTicket)
    const wait = told({ ms: performance.now() - start, ended })
    // a write from inside the 'session' handler never reaches the server on Node 20
    setImmediate(() => go(wait))
  }
  const onTicket = () => proceed('ticket')
  const limit = Math.min(MAX_TICKET_WAIT_MS, Math.max(1, handshakeMs))
  const timer = setTimeout(() => proceed('timeout'), limit)
  // No event says "bytes arrived" without taking them from whoever reads next: look every millisecond.
  const watch = serverSpoke
    ? setInterval(() => {
        if (serverSpoke()) proceed('server spoke')
      }, 1)
    : undefined
  socket.once('session', onTicket)
}

/** afterTicket as a promise. */
export function ticketWait(
  socket: tls.TLSSocket,
  handshakeMs: number,
  logger: Logger,
  serverSpoke?: () => boolean,
): Promise<TicketWait> {
  return new Promise((resolve) => afterTicket(socket, handshakeMs, logger, resolve, serverSpoke))
}

/** A server sent more than a probe will take (a line too long, too much unasked-for data). */
export class FloodError extends Error {
  override name = 'FloodError'
}

export interface LineLimits {
  /** The longest line accepted, in bytes without CRLF. */
  maxLine: number
  /** Bytes of complete lines received but not yet read: a server talking on its own is cut off here. */
  maxUnread: number
}

export const LINE_LIMITS: LineLimits = { maxLine: 64 * 1024, maxUnread: 1024 * 1024 }

/** Reads CRLF-terminated lines from a socket that may be swapped for its TLS successor. */
export class LineChannel {
  #socket: net.Socket
  /** Bytes of a line not yet complete (chunks as received, joined once the line ends). */
  #partial: Buffer[] = []
  #partialBytes = 0
  #lines: string[] = []
  #unreadBytes = 0
  #waiter: { resolve: (line: string) => void; reject: (err: Error) => void } | undefined
  #error: Error | undefined
  readonly #limits: LineLimits
  readonly #onData = (chunk: Buffer) => {
    if (this.#error) return
    let start = 0
    for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, i)
      const bytes = this.#partialBytes + piece.length
      let line = (this.#partialBytes > 0 ? Buffer.concat([...this.#partial, piece]) : piece).toString(
        'latin1',
      )
      this.#partial = []
      this.#partialBytes = 0
      if (line.endsWith('\r')) line = line.slice(0, -1)
      start = i + 1
      if (bytes > this.#limits.maxLine + 1)
        return this.#flood(`a line longer than ${this.#limits.maxLine} bytes`)
      this.#lines.push(line)
      this.#unreadBytes += line.length + 2
      if (this.#unreadBytes > this.#limits.maxUnread)
        return this.#flood(`more than ${this.#limits.maxUnread} bytes that were not asked for`)
    }
    if (start < chunk.length) {
      this.#partial.push(chunk.subarray(start))
      this.#partialBytes += chunk.length - start
      if (this.#partialBytes > this.#limits.maxLine + 1)
        return this.#flood(`a line longer than ${this.#limits.maxLine} bytes`)
    }
    this.#deliver()
  }
  readonly #onError = (err: Error) => {
    this.#fail(err)
  }
  readonly #onClose = () => {
    this.#fail(new Error('connection closed by server'))
  }

  constructor(socket: net.Socket, limits: LineLimits = LINE_LIMITS) {
    this.#socket = socket
    this.#limits = limits
    this.#listen(socket)
  }

  /** Stops reading a flooding server at once: the connection is of no further use. */
  #flood(what: string) {
    this.#lines = []
    this.#partial = []
    this.#partialBytes = 0
    this.#fail(new FloodError(`the server sent ${what}; connection closed`))
    this.#socket.destroy()
  }

  get socket(): net.Socket {
    return this.#socket
  }

  /** Whether bytes have come that nobody has read yet (a whole line or part of one). */
  get unread(): boolean {
    return this.#lines.length > 0 || this.#partialBytes > 0
  }

  #listen(socket: net.Socket) {
    socket.on('data', this.#onData)
    socket.on('error', this.#onError)
    socket.on('close', this.#onClose)
  }

  #unlisten(socket: net.Socket) {
    socket.off('data', this.#onData)
    socket.off('error', this.#onError)
    socket.off('close', this.#onClose)
  }

  #fail(err: Error) {
    this.#error ??= err
    this.#deliver()
  }

  #deliver() {
    const waiter = this.#waiter
    if (!waiter) return
    const line = this.#lines.shift()
    if (line !== undefined) {
      this.#unreadBytes -= line.length + 2
      this.#waiter = undefined
      waiter.resolve(line)
    } else if (this.#error) {
      this.#waiter = undefined
      waiter.reject(this.#error)
    }
  }

  /** The next line, without its CRLF. Rejects when the connection fails or closes first. */
  readLine(): Promise<string> {
    return new Promise((resolve, reject) => {
      if (this.#waiter) {
        reject(new Error('concurrent readLine'))
        return
      }
      this.#waiter = { resolve, reject }
      this.#deliver()
    })
  }

  /** Whether the server sent more than it was asked for (a reply before our command, pipelining). */
  get hasUnread(): boolean {
    return this.#lines.length > 0 || this.#partialBytes > 0
  }

  write(line: string): void {
    this.#socket.write(line + '\r\n')
  }

  /** Detaches from the plain socket before a TLS upgrade (nothing may be buffered: that would be injection). */
  detach(): net.Socket {
    if (this.hasUnread)
      throw new Error('server sent data before the TLS handshake (possible STARTTLS injection)')
    this.#unlisten(this.#socket)
    return this.#socket
  }

  attach(socket: net.Socket): void {
    this.#socket = socket
    this.#error = undefined
    this.#listen(socket)
  }

  /** Closes the connection: a pending read fails, and lines buffered before are never handed out. */
  close(): void {
    this.#lines = []
    this.#partial = []
    this.#partialBytes = 0
    this.#fail(new Error('connection closed'))
    this.#unlisten(this.#socket)
    this.#socket.destroy()
  }
}
