// Pop3Client: a small POP3 client (RFC 1939, CAPA 2449, STLS 2595, AUTH 5034) on a LineChannel, bound to the probe's signal.
// Our own because node-pop3 has no STLS, a broken CAPA, no usable SASL continuations and hangs on split terminators.
import type net from 'node:net'
import { TLSSocket } from 'node:tls'
import { ProtocolError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import { abortable } from './abort.ts'
import { FloodError, LineChannel, startTls, type TlsConfig } from './connection.ts'
import {
  apopTimestamp,
  parseCapa,
  parseListLine,
  parseStat,
  parseStatus,
  parseUidlLine,
  type Capabilities,
} from './pop3-reply.ts'
import {
  apopDigest,
  b64,
  cramMd5Response,
  oauthbearerResponse,
  plainResponse,
  ScramClient,
  xoauth2Response,
  type Pop3Mechanism,
} from './sasl.ts'

export type { Capabilities } from './pop3-reply.ts'

/** The SASL mechanisms (AUTH command); USER and APOP are POP3 commands of their own. */
export type Pop3SaslMechanism = Exclude<Pop3Mechanism, 'USER' | 'APOP'>

export interface Pop3ClientOptions {
  /** The probe's deadline: every command rejects with DeadlineError once it aborts. */
  signal: AbortSignal
  /** Receives the dialogue at debug level (`C: ...`, `S: ...`), secrets redacted. */
  logger: Logger
  /** Largest multi-line replies accepted, in bytes (default REPLY_LIMITS). */
  limits?: Partial<Pop3ReplyLimits>
}

/** What a server may send us in one multi-line reply: a flood ends the connection, not the exporter. */
export interface Pop3ReplyLimits {
  /** CAPA: a few dozen short lines in practice. */
  capa: number
  /** TOP n 0: one message's header block. */
  top: number
  /** UIDL and LIST: one line per message of the maildrop. */
  listing: number
  /** RETR: a whole message. */
  retr: number
}

export const REPLY_LIMITS: Pop3ReplyLimits = {
  capa: 64 * 1024,
  top: 256 * 1024,
  listing: 16 * 1024 * 1024,
  retr: 16 * 1024 * 1024,
}

export interface Pop3Greeting {
  /** The greeting text after `+OK`. */
  text: string
  /** The APOP timestamp (`<...@...>`), when the server offers APOP. */
  timestamp: string | undefined
}

export interface Pop3Credentials {
  username: string
  password: string | undefined
  /** OAuth2 access token, for XOAUTH2. */
  token: string | undefined
}

/** One SASL exchange: the optional initial response, then one response per `+ challenge` (all base64). */
interface SaslExchange {
  initial: string | undefined
  respond(challenge: string): string | Promise<string>
}

/** RFC 5034 4: an AUTH command with its initial response must fit in 255 octets, else the response waits for `+`. */
const MAX_AUTH_LINE = 255

export class Pop3Client {
  readonly #channel: LineChannel
  readonly #signal: AbortSignal
  readonly #logger: Logger
  readonly #limits: Pop3ReplyLimits
  #busy = false
  #closed = false
  #greeting: Pop3Greeting | undefined
  #capabilities: Capabilities | undefined

  /** Wraps a connected socket (plain, or already TLS); the greeting is read by greeting(). */
  constructor(socket: net.Socket, options: Pop3ClientOptions) {
    // An 'error' without a listener would crash the process; the channel reports errors to readers.
    socket.on('error', () => undefined)
    this.#channel = new LineChannel(socket)
    this.#signal = options.signal
    this.#logger = options.logger
    this.#limits = { ...REPLY_LIMITS, ...options.limits }
  }

  /** The current socket (a TLSSocket after startTls). */
  get socket(): net.Socket {
    return this.#channel.socket
  }

  /** The TLS socket when the connection is TLS (implicit or after STLS), else undefined. */
  get tlsSocket(): TLSSocket | undefined {
    const socket = this.socket
    return socket instanceof TLSSocket ? socket : undefined
  }

  /** Whether the connection is TLS (implicit or after STLS). */
  get secure(): boolean {
    return this.tlsSocket !== undefined
  }

  /** The greeting, once read. */
  get greetingInfo(): Pop3Greeting | undefined {
    return this.#greeting
  }

  /** The last CAPA answer on this connection; undefined before CAPA or if the server has none. */
  get capabilities(): Capabilities | undefined {
    return this.#capabilities
  }

  /** Reads the `+OK` greeting and its APOP timestamp. */
  greeting(): Promise<Pop3Greeting> {
    return this.#run(async () => {
      const text = await this.#expectOk()
      this.#greeting = { text, timestamp: apopTimestamp(text) }
      return this.#greeting
    })
  }

  /** CAPA (RFC 2449). Rejects with ProtocolError on -ERR: the server predates CAPA. */
  capa(): Promise<Capabilities> {
    return this.#run(async () => {
      this.#capabilities = undefined
      this.#send('CAPA')
      await this.#expectOk()
      this.#capabilities = parseCapa(await this.#multiline(true, this.#limits.capa))
      return this.#capabilities
    })
  }

  /** Whether the server has sent anything not yet read (after STLS: it spoke before we did). */
  get unread(): boolean {
    return this.#channel.unread
  }

  /** STLS (RFC 2595): the command alone; startTls() does the handshake. */
  stls(): Promise<void> {
    return this.#command('STLS')
  }

  /**
   * TLS over this connection: right after connect (implicit TLS) or after STLS. Resolves when the
   * handshake is done; after STLS, call ticketWait() before the next command (sending at once after
   * a TLS 1.3 handshake can stall the reply on a delayed ACK). Verification is the caller's
   * (checkVerified), so that a bad certificate still yields its facts.
   */
  startTls(host: string, config: TlsConfig): Promise<TLSSocket> {
    return this.#run(async () => {
      // detach() refuses if the server sent anything after its +OK: that would be plaintext injection.
      const plain = this.#channel.detach()
      const secure = await startTls(plain, host, config, this.#signal)
      this.#channel.attach(secure)
      this.#capabilities = undefined // RFC 2595 4: forget what was learnt in the clear
      this.#logger.debug('TLS established', {
        version: secure.getProtocol(),
        cipher: secure.getCipher().name,
        authorized: secure.authorized,
      })
      return secure
    })
  }

  /** Logs in with one mechanism: USER/PASS, APOP (needs the greeting's timestamp) or a SASL mechanism. */
  async login(mechanism: Pop3Mechanism, credentials: Pop3Credentials): Promise<void> {
    switch (mechanism) {
      case 'USER':
        return this.user(credentials.username, password(credentials, mechanism))
      case 'APOP':
        return this.apop(credentials.username, password(credentials, mechanism))
      case 'SCRAM-SHA-256':
      case 'SCRAM-SHA-1':
      case 'CRAM-MD5':
      case 'OAUTHBEARER':
      case 'XOAUTH2':
      case 'PLAIN':
      case 'LOGIN':
        return this.authenticate(mechanism, credentials)
    }
  }

  /** USER then PASS (RFC 1939 7); the password is logged as <redacted>. */
  user(username: string, pass: string): Promise<void> {
    return this.#run(async () => {
      this.#send(`USER ${username}`)
      await this.#expectOk()
      this.#send(`PASS ${pass}`, 'PASS <redacted>')
      await this.#expectOk()
    })
  }

  /** APOP (RFC 1939 7): md5 of the greeting's timestamp and the password; the digest is logged as <redacted>. */
  apop(username: string, pass: string): Promise<void> {
    return this.#run(async () => {
      const timestamp = this.#greeting?.timestamp
      if (timestamp === undefined)
        throw new Error('APOP needs a timestamp in the greeting, and there is none')
      this.#send(`APOP ${username} ${apopDigest(timestamp, pass)}`, `APOP ${username} <redacted>`)
      await this.#expectOk()
    })
  }

  /** AUTH with a SASL mechanism (RFC 5034); payloads are logged as <redacted>. */
  authenticate(mechanism: Pop3SaslMechanism, credentials: Pop3Credentials): Promise<void> {
    return this.#run(() => this.#sasl(mechanism, saslExchange(mechanism, credentials)))
  }

  /** STAT: message count and maildrop size in octets. */
  stat(): Promise<{ messages: number; size: number }> {
    return this.#run(async () => {
      this.#send('STAT')
      const text = await this.#expectOk()
      const stat = parseStat(text)
      if (!stat) throw new ProtocolError('+OK <messages> <octets>', `+OK ${text}`)
      return stat
    })
  }

  /** UIDL: every message's unique id. */
  uidl(): Promise<{ id: number; uid: string }[]> {
    return this.#listing('UIDL', parseUidlLine, 'UIDL lines "<msg> <unique-id>"')
  }

  /** LIST: every message's size in octets. */
  list(): Promise<{ id: number; size: number }[]> {
    return this.#listing('LIST', parseListLine, 'LIST lines "<msg> <octets>"')
  }

  /** TOP msg n: the header and the first n body lines, CRLF-separated, dot-unstuffed, bytes as latin1. */
  top(id: number, lines: number): Promise<string> {
    return this.#run(async () => {
      this.#send(`TOP ${id} ${lines}`)
      await this.#expectOk()
      return (await this.#multiline(false, this.#limits.top)).join('\r\n')
    })
  }

  /** RETR msg: the whole message, CRLF-separated, dot-unstuffed, bytes as latin1. */
  retr(id: number): Promise<string> {
    return this.#run(async () => {
      this.#send(`RETR ${id}`)
      await this.#expectOk()
      return (await this.#multiline(false, this.#limits.retr)).join('\r\n')
    })
  }

  /** DELE msg: marks it deleted; the server removes it only when QUIT succeeds. */
  dele(id: number): Promise<void> {
    return this.#command(`DELE ${id}`)
  }

  /** NOOP. */
  noop(): Promise<void> {
    return this.#command('NOOP')
  }

  /** QUIT (which commits DELEs), then closes the socket. */
  async quit(): Promise<void> {
    await this.#command('QUIT')
    this.close()
  }

  /** Closes the socket at once; a pending command rejects. Safe to call more than once. */
  close(): void {
    this.#closed = true
    this.#channel.close() // a pending read rejects; lines buffered before are dropped
  }

  // ------------------------------------------------------------ plumbing

  /** One command at a time, and none outlives the deadline. */
  async #run<T>(step: () => Promise<T>): Promise<T> {
    if (this.#busy) throw new Error('POP3 client: a command is already running')
    // Lines still buffered from before close() must not be taken as replies to a new command.
    if (this.#closed) throw new Error('POP3 client: the connection is closed')
    this.#busy = true
    try {
      return await abortable(step(), this.#signal)
    } finally {
      this.#busy = false
    }
  }

  async #command(line: string): Promise<void> {
    await this.#run(async () => {
      this.#send(line)
      await this.#expectOk()
    })
  }

  #send(line: string, shown: string = line): void {
    this.#logger.debug(`C: ${shown}`)
    this.#channel.write(line)
  }

  async #readStatus(): Promise<string> {
    const line = await this.#channel.readLine()
    this.#logger.debug(`S: ${line}`)
    return line
  }

  /** The text of a `+OK` line; -ERR (or anything else) rejects with the server's line. */
  async #expectOk(): Promise<string> {
    const line = await this.#readStatus()
    const status = parseStatus(line)
    if (status?.kind !== 'ok') throw new ProtocolError('+OK', line)
    return status.text
  }

  /** The lines of a multi-line reply up to the "." line, dot-unstuffed (RFC 1939 3), within maxBytes. */
  async #multiline(logLines: boolean, maxBytes: number): Promise<string[]> {
    const lines: string[] = []
    let bytes = 0
    for (;;) {
      const line = await this.#channel.readLine()
      if (line === '.') break
      bytes += line.length + 2
      if (bytes > maxBytes) {
        // The rest of the reply is still on its way; the connection cannot be used for another command.
        this.close()
        throw new FloodError(`multi-line reply longer than ${maxBytes} bytes; connection closed`)
      }
      if (logLines) this.#logger.debug(`S: ${line}`)
      lines.push(line.startsWith('.') ? line.slice(1) : line)
    }
    if (!logLines) this.#logger.debug(`S: (${lines.length} lines, ${bytes} bytes)`)
    this.#logger.debug('S: .')
    return lines
  }

  #listing<T>(command: string, parse: (line: string) => T | undefined, expected: string): Promise<T[]> {
    return this.#run(async () => {
      this.#send(command)
      await this.#expectOk()
      return (await this.#multiline(false, this.#limits.listing)).map((line) => {
        const entry = parse(line)
        if (entry === undefined) throw new ProtocolError(expected, line)
        return entry
      })
    })
  }

  /** AUTH: the initial response when it fits, then one response per `+` challenge until +OK or -ERR. */
  async #sasl(mechanism: Pop3SaslMechanism, exchange: SaslExchange): Promise<void> {
    const withInitial =
      exchange.initial !== undefined && `AUTH ${mechanism} ${exchange.initial}`.length + 2 <= MAX_AUTH_LINE
    if (withInitial) this.#send(`AUTH ${mechanism} ${exchange.initial ?? ''}`, `AUTH ${mechanism} <redacted>`)
    else this.#send(`AUTH ${mechanism}`)
    let pendingInitial = withInitial ? undefined : exchange.initial
    for (;;) {
      const line = await this.#readStatus()
      const status = parseStatus(line)
      if (status?.kind === 'ok') return
      if (status?.kind !== 'continue') throw new ProtocolError('+OK', line)
      let response: string
      try {
        // The server's first (empty) challenge asks for the initial response we held back.
        response = pendingInitial ?? (await exchange.respond(status.text))
        pendingInitial = undefined
      } catch (err) {
        // Our side cannot go on (malformed challenge, wrong server signature): cancel, as RFC 5034 4 says.
        this.#send('*')
        await this.#readStatus().catch(() => undefined)
        throw err
      }
      this.#send(response, '<redacted>')
    }
  }
}

function password(credentials: Pop3Credentials, mechanism: Pop3Mechanism): string {
  if (credentials.password === undefined) throw new Error(`${mechanism} needs a password`)
  return credentials.password
}

/** The client side of each SASL mechanism, as initial response plus challenge handler. */
function saslExchange(mechanism: Pop3SaslMechanism, credentials: Pop3Credentials): SaslExchange {
  const { username } = credentials
  const unexpected = (): never => {
    throw new Error(`${mechanism}: unexpected challenge from the server`)
  }
  switch (mechanism) {
    case 'PLAIN':
      return { initial: plainResponse(username, password(credentials, mechanism)), respond: unexpected }
    case 'LOGIN': {
      // Username then password, whatever the prompts say ("VXNlcm5hbWU6" is not guaranteed).
      const answers = [b64(username), b64(password(credentials, mechanism))]
      return { initial: undefined, respond: () => answers.shift() ?? unexpected() }
    }
    case 'CRAM-MD5': {
      const pass = password(credentials, mechanism)
      let asked = false
      return {
        initial: undefined,
        respond: (challenge) => {
          if (asked) unexpected()
          asked = true
          return cramMd5Response(username, pass, challenge)
        },
      }
    }
    case 'XOAUTH2':
    case 'OAUTHBEARER': {
      if (credentials.token === undefined) throw new Error(`${mechanism} needs an access token`)
      // On failure the server sends its error as a challenge; an empty response (RFC 7628: 0x01) ends
      // the exchange with -ERR.
      const initial = (mechanism === 'XOAUTH2' ? xoauth2Response : oauthbearerResponse)(
        username,
        credentials.token,
      )
      return { initial, respond: () => (mechanism === 'XOAUTH2' ? '' : b64('\x01')) }
    }
    case 'SCRAM-SHA-1':
    case 'SCRAM-SHA-256': {
      const scram = new ScramClient(mechanism, username, password(credentials, mechanism))
      let step = 0
      return {
        initial: scram.first(),
        respond: (challenge) => {
          step++
          if (step === 1) return scram.final(challenge)
          if (step === 2) {
            // The server proves it knows the password too; POP3 carries this as a challenge, answered empty.
            scram.verify(challenge)
            return ''
          }
          return unexpected()
        },
      }
    }
  }
}
