// SASL: mechanism choice (strongest both sides support) and the client side of PLAIN, CRAM-MD5, XOAUTH2, SCRAM.
import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto'
import { promisify } from 'node:util'

const pbkdf2Async = promisify(pbkdf2)

/** Strongest first. Challenge-response mechanisms never reveal the password, even to the server. */
export const STRENGTH = [
  'SCRAM-SHA-256',
  'SCRAM-SHA-1',
  'CRAM-MD5',
  'APOP',
  'OAUTHBEARER',
  'XOAUTH2',
  'PLAIN',
  'LOGIN',
  'IMAP-LOGIN',
  'USER',
] as const

const TOKEN_MECHANISMS = new Set(['XOAUTH2', 'OAUTHBEARER'])

/** What each protocol's clients here can log in with (IMAP: imapflow has no CRAM-MD5 and no SCRAM). */
export const SMTP_MECHANISMS = [
  'SCRAM-SHA-256',
  'SCRAM-SHA-1',
  'CRAM-MD5',
  'OAUTHBEARER',
  'XOAUTH2',
  'PLAIN',
  'LOGIN',
] as const
export const POP3_MECHANISMS = [
  'SCRAM-SHA-256',
  'SCRAM-SHA-1',
  'CRAM-MD5',
  'APOP',
  'OAUTHBEARER',
  'XOAUTH2',
  'PLAIN',
  'LOGIN',
  'USER',
] as const
/** IMAP-LOGIN is the IMAP LOGIN command (RFC 9051 6.2.3), as opposed to the SASL mechanism LOGIN. */
export const IMAP_MECHANISMS = ['OAUTHBEARER', 'XOAUTH2', 'PLAIN', 'LOGIN', 'IMAP-LOGIN'] as const
export type SmtpMechanism = (typeof SMTP_MECHANISMS)[number]
export type Pop3Mechanism = (typeof POP3_MECHANISMS)[number]
export type ImapMechanism = (typeof IMAP_MECHANISMS)[number]

/** The credentials of an auth block; a secret is revealed only to the mechanism that sends it. */
export interface Credentials {
  username: string
  password?: { reveal(): string } | undefined
  oauth2_token?: { reveal(): string } | undefined
}

export interface MechanismChoice<M extends string> {
  /** Mechanisms to try, in order (only the first unless try_all_mechanisms). */
  order: M[]
  /** Why the list is empty, when it is. */
  reason?: string
}

/** The parts of a module's auth block that decide the mechanism. */
interface AuthChoice<M extends string> {
  mechanisms?: readonly M[] | undefined
  password?: unknown
  oauth2_token?: unknown
}

/**
 * Which mechanisms to try: the configured preference list (auth.mechanisms) filtered by what the server
 * offers, or by default every mechanism both sides support, strongest first. Token mechanisms need an
 * oauth2_token, the others a password.
 */
export function chooseMechanisms<M extends string>(
  auth: AuthChoice<M>,
  advertised: readonly string[],
  implemented: readonly M[],
): MechanismChoice<M> {
  const usable = (m: M) =>
    implemented.includes(m) &&
    (TOKEN_MECHANISMS.has(m) ? auth.oauth2_token !== undefined : auth.password !== undefined)
  const offered = new Set(advertised.map((m) => m.toUpperCase()))
  const candidates =
    auth.mechanisms ??
    STRENGTH.filter((m): m is (typeof STRENGTH)[number] & M => (implemented as readonly string[]).includes(m))
  const order = candidates.filter((m) => offered.has(m) && usable(m))
  if (order.length > 0) return { order }
  return {
    order,
    reason:
      `no usable mechanism in common: server offers ${[...offered].join(' ') || 'none'}, ` +
      `we would use ${candidates.filter(usable).join(' ') || 'none (check password/oauth2_token)'}`,
  }
}

export const b64 = (text: string | Buffer) => Buffer.from(text).toString('base64')
export const unb64 = (text: string) => Buffer.from(text, 'base64').toString('utf8')

export function plainResponse(user: string, pass: string): string {
  return b64(`\0${user}\0${pass}`)
}

export function cramMd5Response(user: string, pass: string, challengeB64: string): string {
  const digest = createHmac('md5', pass).update(Buffer.from(challengeB64, 'base64')).digest('hex')
  return b64(`${user} ${digest}`)
}

export function xoauth2Response(user: string, token: string): string {
  return b64(`user=${user}\x01auth=Bearer ${token}\x01\x01`)
}

/** RFC 7628 OAUTHBEARER initial response: a GS2 header naming the user, then the bearer token. */
export function oauthbearerResponse(user: string, token: string): string {
  return b64(`n,a=${user.replace(/=/g, '=3D').replace(/,/g, '=2C')},\x01auth=Bearer ${token}\x01\x01`)
}

/** APOP digest (RFC 1939 section 7): md5(timestamp + secret). */
export function apopDigest(timestamp: string, pass: string): string {
  return createHash('md5')
    .update(timestamp + pass)
    .digest('hex')
}

/** RFC 7677 recommends at least 4096; servers use 4096 to a few 10 000. 100 000 takes ~20 ms here. */
export const MAX_SCRAM_ITERATIONS = 100_000

/** The client side of SCRAM (RFC 5802, RFC 7677) without channel binding. */
export class ScramClient {
  readonly #hash: 'sha1' | 'sha256'
  readonly #pass: string
  readonly #nonce: string
  readonly #firstBare: string
  #serverSignature: Buffer | undefined

  constructor(mechanism: 'SCRAM-SHA-1' | 'SCRAM-SHA-256', user: string, pass: string, nonce?: string) {
    this.#hash = mechanism === 'SCRAM-SHA-1' ? 'sha1' : 'sha256'
    this.#pass = pass
    this.#nonce = nonce ?? randomBytes(18).toString('base64')
    const name = user.replaceAll('=', '=3D').replaceAll(',', '=2C')
    this.#firstBare = `n=${name},r=${this.#nonce}`
  }

  /** client-first-message, base64. */
  first(): string {
    return b64(`n,,${this.#firstBare}`)
  }

  /**
   * client-final-message for the server-first-message (both base64). PBKDF2 runs on libuv's thread
   * pool: at high iteration counts the synchronous form blocked the event loop ~20 ms per login.
   */
  async final(serverFirstB64: string): Promise<string> {
    const serverFirst = unb64(serverFirstB64)
    const attrs = new Map(serverFirst.split(',').map((kv) => [kv.slice(0, 1), kv.slice(2)]))
    const nonce = attrs.get('r') ?? ''
    const salt = Buffer.from(attrs.get('s') ?? '', 'base64')
    const iterations = Number(attrs.get('i'))
    if (
      !nonce.startsWith(this.#nonce) ||
      salt.length === 0 ||
      !Number.isInteger(iterations) ||
      iterations < 1
    )
      throw new Error('SCRAM: malformed server-first-message')
    const keyLength = this.#hash === 'sha1' ? 20 : 32
    // The server chooses the work: a huge count would block the exporter's event loop for minutes.
    if (iterations > MAX_SCRAM_ITERATIONS)
      throw new Error(
        `SCRAM: the server asks for ${iterations} iterations (at most ${MAX_SCRAM_ITERATIONS} are done)`,
      )
    const salted = await pbkdf2Async(this.#pass, salt, iterations, keyLength, this.#hash)
    const hmac = (key: Buffer, text: string) => createHmac(this.#hash, key).update(text).digest()
    const clientKey = hmac(salted, 'Client Key')
    const storedKey = createHash(this.#hash).update(clientKey).digest()
    const withoutProof = `c=biws,r=${nonce}`
    const authMessage = `${this.#firstBare},${serverFirst},${withoutProof}`
    const signature = hmac(storedKey, authMessage)
    const proof = Buffer.from(clientKey.map((byte, i) => byte ^ (signature[i] ?? 0)))
    this.#serverSignature = hmac(hmac(salted, 'Server Key'), authMessage)
    return b64(`${withoutProof},p=${proof.toString('base64')}`)
  }

  /** Checks the server-final-message: the server proves it knows the password too. */
  verify(serverFinalB64: string): void {
    const text = unb64(serverFinalB64)
    if (text.startsWith('e=')) throw new Error(`SCRAM: server error ${text.slice(2)}`)
    const v = /(?:^|,)v=([^,]+)/.exec(text)?.[1]
    const expected = this.#serverSignature
    const got = v === undefined ? undefined : Buffer.from(v, 'base64')
    if (!expected || !got || got.length !== expected.length || !timingSafeEqual(got, expected))
      throw new Error('SCRAM: server signature does not match (server does not know the password)')
  }
}
