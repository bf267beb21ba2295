// ImapSession: imapflow on our own socket, its log turned into timed phases, the login decided by the caller.
// Every use of imapflow internals is in this file (see the comments where they are touched).
import type net from 'node:net'
import type { Duplex } from 'node:stream'
import tls from 'node:tls'
import type { AuthOptions, ImapFlow, ImapTransport, Logger as ImapflowLogger } from 'imapflow'
import { DeadlineError, PhaseError, ProtocolError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import { VERSION } from '../version.ts'
import type { ImapMechanism } from './sasl.ts'
import { abortable } from './abort.ts'
import {
  afterTicket,
  bindSignal,
  checkVerified,
  keepPeer,
  describeTlsError,
  FloodError,
  tlsOptions,
  TlsVerifyError,
  type TlsConfig,
} from './connection.ts'
import {
  capabilityList,
  clientCommand,
  hasCapability,
  recentCount,
  redactClientLine,
  serverLine,
} from './imap-reply.ts'

/**
 * capability: CAPABILITY and imapflow's ID before login (0 when the greeting carried the list, as
 * Dovecot's does); capability_tls: the same after STARTTLS; auth: AUTHENTICATE or LOGIN plus
 * imapflow's setup after it (CAPABILITY, ID, NAMESPACE); select: LIST, LSUB, SELECT, EXAMINE, STATUS.
 */
export const IMAP_PHASES = [
  'token',
  'resolve',
  'connect',
  'tls',
  'banner',
  'capability',
  'starttls',
  'capability_tls',
  'auth',
  'select',
  'logout',
] as const
export type ImapPhase = (typeof IMAP_PHASES)[number]

export type ImapTlsMode = 'none' | 'starttls' | 'starttls_opportunistic' | 'implicit'

/** What the login hook is shown: the capability list in force, and how the connection is protected. */
export interface PreLogin {
  capabilities: string[]
  secure: boolean
  /** The certificate verified (false without TLS, and with insecure_skip_verify on a bad one). */
  verified: boolean
}

/** The credentials to log in with; `secret` is the password, or the token for XOAUTH2/OAUTHBEARER. */
export interface LoginPlan {
  mechanism: ImapMechanism
  user: string
  secret: string
}

export interface SessionHooks {
  /** Adds a measured duration to a phase. */
  addPhase(phase: ImapPhase, seconds: number): void
  /** The phase the dialogue is in now (for the deadline). */
  enterPhase(phase: ImapPhase): void
  /** The error for a failure in `phase` (the dialogue names phases: a round trip's leg prefixes them). */
  fail(phase: ImapPhase, cause: unknown): Error
  /** The socket after the STARTTLS handshake, before its certificate is checked. */
  onTls(socket: tls.TLSSocket): void
  /** Runs inside imapflow's connect() right before it would log in; throw to send no credentials. */
  login(state: PreLogin): LoginPlan
}

/**
 * imapflow internals we rely on (not in its d.ts); test/unit/imap-session.test.ts fails if they change.
 * - authenticate(): the login step of connect(), after STARTTLS and ID. Wrapped so that we, not
 *   imapflow, decide whether and how credentials are sent, knowing the capability list and the TLS state.
 * - authCapabilities: AUTH=... keys seen before login; the mechanism that logged in is set to true
 *   ('LOGIN' for the LOGIN command). It tells us what imapflow actually did.
 */
interface Internals {
  authenticate(): Promise<boolean>
  authCapabilities: Map<string, boolean>
  /**
   * The timer of imapflow's fixed 10 s STARTTLS limit (UPGRADE_TIMEOUT), armed right before our
   * transport's upgrade() is called. Cleared there: the probe's deadline rules the handshake.
   */
  upgradeTimeout: ReturnType<typeof setTimeout> | null
}

/** What imapflow's pino-style logger is given (src 'c' and 's' are protocol lines). */
interface LogEntry {
  src?: unknown
  msg?: unknown
  err?: unknown
}

/** greeting: waiting for it; greeted: before login; loggedIn: imapflow's setup after login; ready: connect() done. */
type Stage = 'greeting' | 'greeted' | 'loggedIn' | 'ready'

const SELECT_VERBS = new Set(['LIST', 'LSUB', 'SELECT', 'EXAMINE', 'STATUS'])
const LOGIN_VERBS = new Set(['AUTHENTICATE', 'LOGIN'])
/** Our signal is the deadline; imapflow's own timers must never fire first. */
const NEVER_MS = 3600_000

/**
 * What a server may send a probe. imapflow's own limits default to 1 GiB; a probe reads capability
 * lists, short SEARCH results and a few header fields, so far less will do. Untagged data is also
 * bounded per command: a server that floods untagged lines is cut off, not parsed for the deadline.
 */
export const IMAP_LIMITS = {
  maxLineLength: 1024 * 1024,
  maxLiteralSize: 1024 * 1024,
  maxResponseSize: 2 * 1024 * 1024,
  maxUntaggedBytes: 1024 * 1024,
  /** imapflow takes each line in turn (about 15k to 60k lines a second): lines are bounded too. */
  maxUntaggedLines: 2_000,
}

/**
 * imapflow is loaded by the first IMAP probe, not at start: with what it pulls in (pino, iconv-lite,
 * libmime) it is about 12 MB of resident memory that an exporter without IMAP modules never needs.
 * Load it before connecting: a server that greets and hangs up at once must find imapflow listening.
 */
export async function loadImapflow(): Promise<typeof ImapFlow> {
  return (await import('imapflow')).ImapFlow
}

export interface ImapSessionOptions {
  /** imapflow's client class (loadImapflow). */
  imapflow: typeof ImapFlow
  /** Connected; for implicit TLS the TLSSocket, its certificate already checked. */
  socket: net.Socket
  host: string
  port: number
  mode: ImapTlsMode
  tlsConfig: TlsConfig
  signal: AbortSignal
  logger: Logger
  hooks: SessionHooks
}

/** Greetings a server may open with (RFC 9051 7.1). */
const GREETINGS = new Set(['OK', 'PREAUTH', 'BYE'])

export class ImapSession {
  readonly client: ImapFlow
  /** The pre-login capability lists as the server sent them: before TLS (plain) and under TLS. */
  readonly capabilities: { plain?: string[]; tls?: string[] } = {}
  readonly #host: string
  readonly #mode: ImapTlsMode
  readonly #tlsConfig: TlsConfig
  readonly #signal: AbortSignal
  readonly #logger: Logger
  readonly #hooks: SessionHooks
  readonly #socket: net.Socket
  readonly #pending = new Map<string, { t: number; phase: ImapPhase | undefined; verb: string }>()
  readonly #onAbort = () => this.close()
  #tlsSocket: tls.TLSSocket | undefined
  #viaStarttls = false
  #starttlsSent = false
  #loginSent = false
  #stage: Stage = 'greeting'
  #phase: ImapPhase = 'banner'
  #during: ImapPhase | undefined
  #bannerStart = performance.now()
  #refusal: { verb: string; line: string } | undefined
  #bye: string | undefined
  #recent: number | undefined
  #loginRefused = false
  #chosen: ImapMechanism | undefined
  /** Why we hung up on the server ourselves (a garbage greeting, a flood), if we did. */
  #hungUp: Error | undefined
  /** A NO or BAD to CAPABILITY before login, and the phase it was in. */
  #capabilityRefused: { phase: ImapPhase; line: string } | undefined
  #untaggedBytes = 0
  #closed = false
  #untaggedLines = 0

  constructor(options: ImapSessionOptions) {
    this.#host = options.host
    this.#mode = options.mode
    this.#tlsConfig = options.tlsConfig
    this.#signal = options.signal
    this.#logger = options.logger
    this.#hooks = options.hooks
    this.#socket = options.socket
    if (options.socket instanceof tls.TLSSocket) this.#tlsSocket = options.socket // implicit TLS
    const socket = options.socket
    // imapflow's public transport hook: DNS, TCP and implicit TLS are already done (and timed) by
    // the caller; STARTTLS is ours so that we time it and check the certificate ourselves.
    const transport: ImapTransport = {
      connect: (_opts, onConnect) => {
        setImmediate(onConnect) // imapflow stores the returned socket before it may be told
        return socket
      },
      upgrade: (plain, _opts, onSecure) => this.#upgrade(plain, onSecure),
    }
    this.client = new options.imapflow({
      host: options.host,
      port: options.port,
      secure: options.mode === 'implicit',
      // true: fail without STARTTLS; false: never send it; undefined: upgrade when offered
      doSTARTTLS: options.mode === 'starttls' ? true : options.mode === 'none' ? false : undefined,
      transport,
      // Always ours: imapflow's default logger prints JSON (user names included) to stdout.
      logger: this.#imapflowLogger(),
      // imapflow adds its own vendor and support-url to ours; empty values are left out of ID, so the
      // server sees only who is asking.
      clientInfo: { name: 'mailprobe_exporter', version: VERSION, vendor: '', 'support-url': '' },
      // A probe needs none of these, and each costs round trips: no IDLE, no COMPRESS, and no ENABLE
      // (IMAP4rev2 would also drop RECENT from EXAMINE and STATUS).
      disableAutoIdle: true,
      disableCompression: true,
      disableAutoEnable: true,
      connectionTimeout: NEVER_MS,
      greetingTimeout: NEVER_MS,
      socketTimeout: NEVER_MS,
      maxLineLength: IMAP_LIMITS.maxLineLength,
      maxLiteralSize: IMAP_LIMITS.maxLiteralSize,
      maxResponseSize: IMAP_LIMITS.maxResponseSize,
    })
    // Mandatory: imapflow emits late socket errors; without a listener Node kills the process.
    this.client.on('error', (err: Error) => {
      this.#logger.debug('imap connection error', { err: err.message })
    })
    this.#wrapAuthenticate()
    // imapflow has no per-command timeout: closing the client is what ends a command at the deadline.
    if (options.signal.aborted) queueMicrotask(this.#onAbort)
    else options.signal.addEventListener('abort', this.#onAbort, { once: true })
  }

  /** The phase of the command in flight (or last sent). */
  get phase(): ImapPhase {
    return this.#phase
  }

  /** n of the last "* n RECENT" (SELECT/EXAMINE). */
  get recent(): number | undefined {
    return this.#recent
  }

  /** Whether the server answered NO/BAD to AUTHENTICATE or LOGIN. */
  get loginRefused(): boolean {
    return this.#loginRefused
  }

  /** The mechanism the login hook chose on this connection. */
  get chosen(): ImapMechanism | undefined {
    return this.#chosen
  }

  /** Whether the connection is TLS (implicit or after STARTTLS). */
  get secure(): boolean {
    return this.#tlsSocket !== undefined
  }

  /**
   * The mechanism that logged in, as imapflow recorded it (IMAP-LOGIN for the LOGIN command);
   * undefined before login and after a PREAUTH greeting.
   */
  get mechanismUsed(): string | undefined {
    const recorded = (this.client as unknown as Internals).authCapabilities
    for (const [key, used] of recorded) if (used) return key === 'LOGIN' ? 'IMAP-LOGIN' : key.slice(5)
    return undefined
  }

  /** Greeting, CAPABILITY, STARTTLS (as the mode says), ID, login and imapflow's setup after it. */
  async connect(): Promise<void> {
    this.#bannerStart = performance.now()
    this.#enter('banner')
    this.#refusal = undefined
    if (this.#signal.aborted) throw this.#hooks.fail('banner', new DeadlineError())
    try {
      await abortable(this.client.connect(), this.#signal)
    } catch (err) {
      throw this.#connectFailure(err)
    }
    this.#stage = 'ready'
  }

  /**
   * Runs a step whose commands all belong to `phase` (commands with a phase of their own, such as
   * LOGOUT, keep it); a failure is a PhaseError with the server's NO/BAD/BYE text when there was one.
   */
  async during<T>(phase: ImapPhase, step: () => Promise<T>): Promise<T> {
    this.#during = phase
    this.#enter(phase)
    try {
      return await this.call(step)
    } catch (err) {
      throw err instanceof PhaseError ? err : this.#hooks.fail(phase, err)
    } finally {
      this.#during = undefined
    }
  }

  /** Runs a client call; rejects at the deadline, and with the server's NO/BAD/BYE text when there was one. */
  call<T>(step: () => Promise<T>): Promise<T> {
    this.#refusal = undefined
    if (this.#signal.aborted) return Promise.reject(new DeadlineError()) // no command after the deadline
    let promise: Promise<T>
    try {
      promise = step()
    } catch (err) {
      promise = Promise.reject(err instanceof Error ? err : new Error(String(err)))
    }
    return abortable(promise, this.#signal).catch((err: unknown) => {
      throw this.#explain(err)
    })
  }

  /** Ends the connection from our side, remembering why: that is the probe's failure. */
  #hangUp(reason: Error) {
    this.#hungUp ??= reason
    this.#logger.debug('closing the connection', { reason: reason.message })
    this.close()
  }

  /** Closes the connection at once; safe to call more than once. */
  close(): void {
    this.#closed = true
    this.#signal.removeEventListener('abort', this.#onAbort)
    this.client.close()
    this.#tlsSocket?.destroy()
    this.#socket.destroy()
  }

  #enter(phase: ImapPhase) {
    this.#phase = phase
    this.#hooks.enterPhase(phase)
  }

  /** Which phase a command goes to; undefined after connect() for the caller's own commands. */
  #phaseOf(verb: string): ImapPhase | undefined {
    if (verb === 'STARTTLS') return 'starttls'
    if (LOGIN_VERBS.has(verb)) return 'auth'
    if (this.#stage === 'greeting' || this.#stage === 'greeted')
      return this.#viaStarttls ? 'capability_tls' : 'capability' // CAPABILITY, ID
    if (this.#stage === 'loggedIn') return 'auth' // CAPABILITY, ID, NAMESPACE (or LIST "" "")
    if (SELECT_VERBS.has(verb)) return 'select'
    if (verb === 'LOGOUT') return 'logout'
    return this.#during
  }

  #imapflowLogger(): ImapflowLogger {
    const at =
      (level: string) =>
      (entry: LogEntry | undefined): void => {
        this.#onLog(level, entry ?? {})
      }
    return {
      trace: at('trace'),
      debug: at('debug'),
      info: at('info'),
      warn: at('warn'),
      error: at('error'),
      fatal: at('fatal'),
    }
  }

  #onLog(level: string, entry: LogEntry) {
    // After close(), imapflow may still parse what it had buffered (a flood): none of it matters now.
    if (this.#closed) return
    const msg = typeof entry.msg === 'string' ? entry.msg : ''
    // Client lines are logged at debug right before they are written, server lines once parsed.
    if (entry.src === 'c' && level === 'debug') this.#onClient(msg)
    else if (entry.src === 's') this.#onServer(msg)
    else if (level !== 'trace' && level !== 'debug') {
      const err = entry.err instanceof Error ? entry.err.message : undefined
      this.#logger.debug(`imapflow ${level}: ${msg || err || ''}`, err !== undefined && msg ? { err } : {})
    }
  }

  #onClient(line: string) {
    this.#logger.debug(`C: ${redactClientLine(line)}`)
    const command = clientCommand(line)
    if (!command) return // a continuation (SASL response, DONE) of the command in flight
    const phase = this.#phaseOf(command.verb)
    if (command.verb === 'STARTTLS') this.#starttlsSent = true
    if (LOGIN_VERBS.has(command.verb)) this.#loginSent = true
    this.#pending.set(command.tag, { t: performance.now(), phase, verb: command.verb })
    if (phase) this.#enter(phase)
  }

  #onServer(line: string) {
    const now = performance.now()
    this.#logger.debug(`S: ${line}`)
    const { tag, word } = serverLine(line)
    if (this.#stage === 'greeting') {
      this.#hooks.addPhase('banner', (now - this.#bannerStart) / 1000)
      if (tag !== '*' || !GREETINGS.has(word)) {
        // imapflow would wait for a greeting until the deadline; this is not an IMAP server.
        this.#hangUp(new ProtocolError('* OK greeting', line))
        return
      }
      this.#stage = word === 'PREAUTH' ? 'loggedIn' : 'greeted'
    }
    if (tag === '*' || tag === '+') {
      this.#untaggedBytes += line.length + 2
      this.#untaggedLines++
      if (
        this.#untaggedBytes > IMAP_LIMITS.maxUntaggedBytes ||
        this.#untaggedLines > IMAP_LIMITS.maxUntaggedLines
      ) {
        this.#hangUp(
          new FloodError(
            `the server sent more than ${IMAP_LIMITS.maxUntaggedLines} lines or ${IMAP_LIMITS.maxUntaggedBytes} bytes of untagged data for one command; connection closed`,
          ),
        )
        return
      }
    } else {
      this.#untaggedBytes = 0
      this.#untaggedLines = 0
    }
    // The pre-login lists only: the OK to the login carries the (longer) post-login list.
    const capabilities = this.#loginSent ? undefined : capabilityList(line)
    if (capabilities) this.capabilities[this.secure ? 'tls' : 'plain'] = capabilities
    if (tag === '*') {
      this.#recent = recentCount(line) ?? this.#recent
      if (word === 'BYE') this.#bye = line
      return
    }
    const command = this.#pending.get(tag)
    if (!command) return
    this.#pending.delete(tag)
    if (command.phase) this.#hooks.addPhase(command.phase, (now - command.t) / 1000)
    const login = LOGIN_VERBS.has(command.verb)
    if (word === 'NO' || word === 'BAD') {
      this.#refusal = { verb: command.verb, line }
      if (login) this.#loginRefused = true
      // imapflow goes on without the list; the login would then fail for want of a mechanism.
      if (command.verb === 'CAPABILITY' && !this.#loginSent && command.phase)
        this.#capabilityRefused ??= { phase: command.phase, line }
    } else if (word === 'OK' && login) {
      this.#stage = 'loggedIn'
    }
  }

  /**
   * STARTTLS handshake on imapflow's behalf: timed, certificate recorded and checked, ticket awaited.
   * imapflow gives up on it after a fixed 10 s (UPGRADE_TIMEOUT), sooner than a longer deadline.
   */
  #upgrade(plain: Duplex, onSecure: () => void): tls.TLSSocket {
    const internals = this.client as unknown as Internals
    if (internals.upgradeTimeout) clearTimeout(internals.upgradeTimeout) // the deadline rules, not a fixed 10 s
    this.#enter('tls')
    const start = performance.now()
    let timed = false
    const time = () => {
      if (timed) return
      timed = true
      this.#hooks.addPhase('tls', (performance.now() - start) / 1000)
    }
    const options = tlsOptions(this.#host, this.#tlsConfig)
    const secure = tls.connect({ ...options, socket: plain })
    bindSignal(secure, this.#signal)
    secure.once('error', time) // imapflow's own listener reports the error
    secure.once('secureConnect', () => {
      // Phase tls is the handshake; the ticket wait after it is the client's own (debug line only).
      time()
      keepPeer(secure, options)
      // imapflow reads the socket only once it has it: what the server sends first waits in it, unread
      afterTicket(
        secure,
        performance.now() - start,
        this.#logger,
        () => {
          this.#tlsSocket = secure
          this.#viaStarttls = true
          this.#hooks.onTls(secure)
          try {
            checkVerified(secure, this.#tlsConfig)
          } catch (err) {
            secure.destroy(err instanceof Error ? err : new Error(String(err))) // imapflow fails connect() with it
            return
          }
          onSecure()
        },
        () => secure.readableLength > 0,
      )
    })
    return secure
  }

  #wrapAuthenticate() {
    const internals = this.client as unknown as Internals
    const original = internals.authenticate.bind(this.client)
    internals.authenticate = async () => {
      if (this.client.authenticated) return original() // PREAUTH: nothing to send
      if (this.#capabilityRefused) {
        const { phase, line } = this.#capabilityRefused
        throw this.#hooks.fail(phase, new ProtocolError('OK to CAPABILITY', line))
      }
      this.#enter('auth')
      this.#refusal = undefined // a NO that imapflow let pass before login (ID, say) is not why a login fails
      const plan = this.#hooks.login({
        capabilities: [...this.client.capabilities.keys()],
        secure: this.secure,
        verified: this.#tlsSocket?.authorized === true,
      })
      this.#chosen = plan.mechanism
      // Credentials reach imapflow only now, once we have decided they may be sent.
      this.client.options.auth = imapflowAuth(plan)
      // imapflow takes OAUTHBEARER whenever it is offered; hiding it is how XOAUTH2 is forced.
      if (plan.mechanism === 'XOAUTH2') this.client.capabilities.delete('AUTH=OAUTHBEARER')
      return original()
    }
  }

  #connectFailure(err: unknown): Error {
    if (err instanceof PhaseError) return err
    if (this.#capabilityRefused && !this.#hungUp && !this.#signal.aborted) {
      // Without a capability list, STARTTLS is "not offered" and no mechanism is in common: say why.
      const { phase, line } = this.#capabilityRefused
      return this.#hooks.fail(phase, new ProtocolError('OK to CAPABILITY', line))
    }
    const explained = this.#explain(err)
    // tls: starttls, and imapflow stopped before sending STARTTLS: not offered, or a PREAUTH greeting.
    if (
      this.#mode === 'starttls' &&
      this.#stage !== 'greeting' &&
      !this.secure &&
      !this.#starttlsSent &&
      !this.#loginSent &&
      !(explained instanceof DeadlineError) &&
      !(explained instanceof ProtocolError)
    ) {
      const offered = hasCapability(this.capabilities.plain ?? [], 'STARTTLS')
      return this.#hooks.fail(
        'starttls',
        offered ? explained : new Error('the server does not offer STARTTLS, which tls: starttls requires'),
      )
    }
    return this.#hooks.fail(this.#phase, explained)
  }

  /** The deadline, a certificate problem, the server's NO/BAD/BYE, or else imapflow's error as it is. */
  #explain(err: unknown): Error {
    if (this.#hungUp) return this.#hungUp
    if (err instanceof DeadlineError || this.#signal.aborted) return new DeadlineError()
    if (err instanceof TlsVerifyError) return err
    if (this.#refusal) return new ProtocolError(`OK to ${this.#refusal.verb}`, this.#refusal.line)
    if (this.#bye)
      return new ProtocolError(
        this.#pending.size === 0 && this.#phase === 'banner' ? '* OK greeting' : 'no BYE',
        this.#bye,
      )
    return err instanceof Error ? describeTlsError(err) : new Error(String(err))
  }
}

function imapflowAuth(plan: LoginPlan): AuthOptions {
  switch (plan.mechanism) {
    case 'PLAIN':
      return { user: plan.user, pass: plan.secret, loginMethod: 'AUTH=PLAIN' }
    case 'LOGIN':
      return { user: plan.user, pass: plan.secret, loginMethod: 'AUTH=LOGIN' }
    case 'IMAP-LOGIN':
      return { user: plan.user, pass: plan.secret, loginMethod: 'LOGIN' }
    case 'XOAUTH2':
    case 'OAUTHBEARER':
      return { user: plan.user, accessToken: plan.secret }
  }
}

/**
 * UID EXPUNGE of exactly these UIDs (RFC 4315), sent by us through imapflow's internal exec(): its
 * messageDelete() re-reads the capabilities after STORE and sends a bare EXPUNGE when UIDPLUS is gone
 * from them, which would remove the user's own \\Deleted mail. test/unit/imap-session.test.ts guards exec().
 */
export async function uidExpunge(client: ImapFlow, uids: string): Promise<void> {
  const internal = client as unknown as {
    exec(command: string, attributes: { type: string; value: string }[]): Promise<{ next(): void }>
  }
  const response = await internal.exec('UID EXPUNGE', [{ type: 'SEQUENCE', value: uids }])
  response.next() // releases imapflow's command queue, as its own commands do
}
