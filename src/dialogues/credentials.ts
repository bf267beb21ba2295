// The one credential policy of every dialogue: when credentials may be sent, which mechanism, and the
// try-each-mechanism loop. A refusal is a CredentialPolicyError that says why.
import { PhaseError, ProtocolError, findCause } from '../errors.ts'
import type { Logger } from '../logger.ts'
import type { PhaseTimer } from '../phases.ts'
import type { TokenSources } from '../oauth2/sources.ts'
import { TokenError } from '../oauth2/token-error.ts'
import type { OAuth2Config } from '../oauth2/token-source.ts'
import type { Secret } from '../secret.ts'
import { chooseMechanisms, type Credentials, type MechanismChoice } from '../protocol/sasl.ts'

export type CredentialRefusal =
  /** No TLS on this connection, and auth.allow_plaintext is not set. */
  | 'plaintext'
  /** TLS whose certificate did not verify (insecure_skip_verify only lets the handshake finish). */
  | 'unverified'
  /** The server offers no way to log in on this connection. */
  | 'not_offered'
  /** Nothing both sides support that the configured credentials can be used with. */
  | 'no_mechanism'

const MESSAGES: Record<'plaintext' | 'unverified', string> = {
  plaintext: 'refusing to send credentials without TLS (set auth.allow_plaintext to allow it)',
  unverified: 'refusing to send credentials over TLS whose certificate did not verify',
}

/** Credentials were not sent, on purpose; `reason` says why. */
export class CredentialPolicyError extends Error {
  override name = 'CredentialPolicyError'
  readonly reason: CredentialRefusal
  constructor(reason: CredentialRefusal, message?: string) {
    super(message ?? (reason === 'plaintext' || reason === 'unverified' ? MESSAGES[reason] : reason))
    this.reason = reason
  }
}

/** An auth block, as far as the policy is concerned. */
export interface AuthPolicy<M extends string> extends Credentials {
  mechanisms?: readonly M[] | undefined
  try_all_mechanisms: boolean
  allow_plaintext: boolean
}

/** The connection credentials would go over. */
export interface Transport {
  /** TLS is up (implicit, or after STARTTLS/STLS). */
  secure: boolean
  /** Its certificate verified. */
  verified: boolean
}

/** Throws CredentialPolicyError unless credentials may go over this connection. */
export function checkTransport(transport: Transport, auth: { allow_plaintext: boolean }): void {
  if (!transport.secure && !auth.allow_plaintext) throw new CredentialPolicyError('plaintext')
  if (transport.secure && !transport.verified) throw new CredentialPolicyError('unverified')
}

/**
 * The mechanisms to try, in order: the transport checked first, then the configured preference (or the
 * strongest both sides support). Throws CredentialPolicyError when there is none.
 */
export function planLogin<M extends string>(
  auth: AuthPolicy<M>,
  transport: Transport,
  advertised: readonly string[],
  implemented: readonly M[],
): M[] {
  checkTransport(transport, auth)
  const choice: MechanismChoice<M> = chooseMechanisms(auth, advertised, implemented)
  if (choice.order.length === 0)
    throw new CredentialPolicyError('no_mechanism', choice.reason ?? 'no usable mechanism')
  return auth.try_all_mechanisms ? choice.order : choice.order.slice(0, 1)
}

/**
 * Logs in with the first mechanism of `order` that works. A refusal by the server (ProtocolError) moves
 * on to the next; anything else (the connection is gone) ends the loop at once. Returns the mechanism
 * that worked; throws the last refusal.
 */
export async function tryMechanisms<M extends string>(
  order: readonly M[],
  login: (mechanism: M) => Promise<void>,
  logger: Logger,
): Promise<M> {
  let lastError: unknown = new CredentialPolicyError('no_mechanism', 'no usable mechanism')
  for (const mechanism of order) {
    try {
      await login(mechanism)
      logger.debug('authenticated', { mechanism })
      return mechanism
    } catch (err) {
      lastError = err
      logger.info('login failed', { mechanism, err: (err as Error).message })
      if (!(err instanceof ProtocolError)) throw err
    }
  }
  throw lastError
}

/** An auth block as far as its token goes: a fixed oauth2_token, or oauth2 (a token endpoint). */
interface TokenAuth {
  oauth2_token?: Secret | undefined
  oauth2?: OAuth2Config | undefined
}

/** A refusal of the credentials by the server (not of the connection, nor of our policy). */
const refusedAtAuth = (err: unknown) =>
  /(^|_)auth$/.test(findCause(err, PhaseError)?.phase ?? '') && findCause(err, ProtocolError) !== undefined

/** The token endpoint's answers that say the client's own credentials are wrong (RFC 6749 5.2). */
const REFUSED_GRANTS = new Set(['invalid_client', 'invalid_grant', 'unauthorized_client'])

/**
 * Whether a probe failed because its credentials were refused: by the mail server at auth, or by the
 * token endpoint. Trying again at once would only repeat it, and count towards a lockout.
 */
export function credentialsRefused(err: unknown): boolean {
  if (refusedAtAuth(err)) return true
  const token = findCause(err, TokenError)
  return (
    token !== undefined &&
    REFUSED_GRANTS.has(token.code) &&
    /(^|_)token$/.test(findCause(err, PhaseError)?.phase ?? '')
  )
}

/**
 * Runs a dialogue with the auth block's credentials. With auth.oauth2, an access token from the
 * exporter's token source first, timed as the dialogue's phase token (a fetch, or ~0 when cached); when
 * the server then refuses a token that came from the cache (it expired early, or was revoked), the token
 * is dropped and the dialogue runs once more with a fresh one, never more.
 */
export async function withCredentials<A extends TokenAuth | undefined, T>(
  auth: A,
  ctx: { signal: AbortSignal; logger: Logger; tokens: TokenSources },
  phase: PhaseTimer<'token'>,
  dialogue: (auth: A) => Promise<T>,
): Promise<T> {
  const oauth2 = auth?.oauth2
  if (auth === undefined || oauth2 === undefined) return dialogue(auth)
  const source = ctx.tokens.for(oauth2)
  const first = await phase('token', () => source.token(ctx.signal))
  ctx.logger.debug('access token', {
    from: first.fetched ? 'token endpoint' : 'cache',
    expires_in_seconds: Math.round((first.expiresAt - Date.now()) / 1000),
  })
  try {
    return await dialogue({ ...auth, oauth2_token: first.accessToken })
  } catch (err) {
    if (first.fetched || !refusedAtAuth(err)) throw err
    ctx.logger.info('the server refused the cached access token; trying once more with a new one', {
      err: (err as Error).message,
    })
    source.expired(first)
    const fresh = await phase('token', () => source.token(ctx.signal))
    return dialogue({ ...auth, oauth2_token: fresh.accessToken })
  }
}
