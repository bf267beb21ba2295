// TokenSource: the OAuth2 access tokens of one client (Exchange Online, Gmail), fetched from its token endpoint
// when needed, cached until near expiry, shared by concurrent callers, refreshed ahead of time.
//
// Use (one source per distinct `oauth2:` config, kept across probes, e.g. in a ProberState):
//
//   const source = new TokenSource(module.auth.oauth2, { stateFile, logger })   // OAuth2Schema's output
//   const token = await source.token(ctx.signal)       // AccessToken; token.accessToken is a Secret
//   await authenticate(token.accessToken.reveal())      // XOAUTH2 / OAUTHBEARER
//   // The server said the token expired or is invalid (IMAP NO [AUTHENTICATIONFAILED], SMTP 535 after
//   // XOAUTH2's JSON challenge with status 401): drop it and try once more, never in a loop.
//   if (failedBecauseOfToken) { source.expired(token); retry with (await source.token(ctx.signal)) }
//   ...
//   await source.close()                                 // on reload (config changed) and at shutdown
//
// `token(signal)` resolves at once with the cached token while it has more than the refresh margin left
// (min(5 min, 10% of its lifetime)). Inside the margin it still resolves at once with the cached token,
// and starts a refresh in the background; only a caller with no valid token waits for a fetch. There is
// at most one fetch in flight: every caller that needs a token waits for the same one. A caller's signal
// only ends its own wait (it rejects with DeadlineError); the fetch is bounded by its own timeout
// (`timeoutMs`, 10 s) and goes on for the others, and its token is cached when it comes. A failed fetch
// rejects every waiter with a TokenError; after a failed background refresh the next one waits 10 s, and
// the cached token is used until it really expires. A token without expires_in lasts 1 h (what Microsoft
// and Google grant); a longer expires_in is cut to 24 h. Expiry is counted from when the request was sent,
// on the injected clock `now()`.
//
// The request (RFC 6749 4.4 and 6): POST application/x-www-form-urlencoded with grant_type, client_id,
// client_secret in the body (client_secret_post: what Microsoft and Google both take; not HTTP Basic), scope
// (the scopes joined by spaces, left out when there are none), refresh_token for that grant, then
// endpoint_params. Over node:https only, the certificate always verified (tls_config.ca for a private CA),
// redirects not followed, at most 64 KiB read back. token_url must be https, loopback included: tests run
// the endpoint over TLS with a throwaway CA (test/servers/token-endpoint.ts).
//
// Rotated refresh tokens: when the endpoint answers with a new refresh_token it is used from then on and,
// with a `stateFile`, written to that file (JSON, mode 0600, temp file + fsync + rename; refresh-state.ts).
// On the first fetch, the file's refresh token is preferred to the configured one when the file names the
// same token_url and client_id, and the SHA-256 of the same configured refresh token (so that a new
// configured token, after someone consented again, wins over an old rotation). Two sources must never share
// a refresh token: each would rotate it from under the other. `stateFileName(config)` names a file per
// client and configured refresh token.
//
// Secrets (client secret, refresh tokens, access tokens) never appear in a message, a log line, or the
// JSON or inspect output of a source or a token: messages quote the endpoint's error and error_description
// escaped, bounded, and with every known secret replaced by <secret>.
import { inspect } from 'node:util'
import { silentLogger, type Logger } from '../logger.ts'
import { abortable } from '../protocol/abort.ts'
import type { TlsConfig } from '../protocol/connection.ts'
import { Secret } from '../secret.ts'
import { loadRefreshState, saveRefreshState, sha256, type RefreshOwner } from './refresh-state.ts'
import { TokenError } from './token-error.ts'
import { endpointName, postForm, readGrant } from './token-request.ts'

export { TokenError, type TokenErrorCode } from './token-error.ts'

/** What a TokenSource needs: OAuth2Schema's output (src/oauth2/settings.ts). */
export interface OAuth2Config {
  token_url: string
  client_id: string
  /** Sent in the body; may be left out with grant refresh_token (a public client). */
  client_secret?: Secret | undefined
  scopes: readonly string[]
  /** Extra form fields; they never replace the fields above. */
  endpoint_params: Readonly<Record<string, string>>
  grant: 'client_credentials' | 'refresh_token'
  /** Required with grant refresh_token. */
  refresh_token?: Secret | undefined
  tls_config?: TlsConfig | undefined
  /** Where a rotated refresh token is kept (TokenSources passes it as the stateFile option). */
  state_file?: string | undefined
}

export interface TokenSourceOptions {
  /** Where a rotated refresh token is kept across restarts (grant refresh_token only). */
  stateFile?: string | undefined
  /** The process logger: fetches at debug, background failures and state file problems at warn/error. */
  logger?: Logger
  /** Milliseconds since the epoch; tests move it to cross expiry without waiting. */
  now?: () => number
  /** Bounds one fetch (connect, TLS, answer); default 10 s. */
  timeoutMs?: number
}

/** An access token as `token()` gives it. `accessToken` prints as <secret>; compare tokens by it. */
export interface AccessToken {
  readonly accessToken: Secret
  readonly tokenType: 'Bearer'
  /** When it expires, in milliseconds on the source's clock. */
  readonly expiresAt: number
  /** Its lifetime in seconds: expires_in, or the 1 h default. */
  readonly lifetime: number
  /** Whether this call waited for a fetch (its own or one it shared) that brought this token. */
  readonly fetched: boolean
  /** How long this call waited for that fetch, in seconds (only when fetched). */
  readonly seconds?: number
}

export const DEFAULT_LIFETIME_SECONDS = 3600
export const MAX_LIFETIME_SECONDS = 24 * 3600
export const DEFAULT_TIMEOUT_MS = 10_000
/** After a failed background refresh, the next one waits this long (callers with no valid token do not). */
export const REFRESH_RETRY_MS = 10_000

/** How long before expiry a token is refreshed: min(5 min, 10% of its lifetime), in seconds. */
export const refreshMargin = (lifetimeSeconds: number) => Math.min(300, lifetimeSeconds / 10)

/** A state file name for this client and configured refresh token (join it to the exporter's state directory). */
export function stateFileName(
  config: Pick<OAuth2Config, 'token_url' | 'client_id' | 'refresh_token'>,
): string {
  const owner = `${config.token_url}\n${config.client_id}\n${sha256(config.refresh_token?.reveal() ?? '')}`
  return `oauth2-${sha256(owner).slice(0, 16)}.json`
}

interface Cached {
  accessToken: Secret
  lifetime: number
  expiresAt: number
  refreshAt: number
}

const view = (cached: Cached, fetched: boolean, seconds?: number): AccessToken => ({
  accessToken: cached.accessToken,
  tokenType: 'Bearer',
  expiresAt: cached.expiresAt,
  lifetime: cached.lifetime,
  fetched,
  ...(seconds === undefined ? {} : { seconds }),
})

const ignore = () => undefined

export class TokenSource {
  readonly #config: OAuth2Config
  readonly #url: URL
  readonly #endpoint: string
  readonly #stateFile: string | undefined
  readonly #logger: Logger
  readonly #now: () => number
  readonly #timeoutMs: number
  readonly #closer = new AbortController()
  /** The refresh token in use: the configured one, the state file's, or the newest rotation. */
  #refreshToken: Secret | undefined
  #stateLoaded: Promise<void> | undefined
  #current: Cached | undefined
  #flight: Promise<Cached> | undefined
  #retryAfter = 0
  #toldNoStateFile = false
  #closed = false

  constructor(config: OAuth2Config, options: TokenSourceOptions = {}) {
    const url = new URL(config.token_url)
    // OAuth2Schema checks these at load; a source built by hand gets the same rules.
    if (url.protocol !== 'https:' || url.username !== '' || url.password !== '')
      throw new Error('token_url must be an https:// URL without a user name or password')
    if (config.grant === 'refresh_token' && config.refresh_token === undefined)
      throw new Error('grant refresh_token needs a refresh_token')
    this.#config = config
    this.#url = url
    this.#endpoint = endpointName(url)
    this.#stateFile = config.grant === 'refresh_token' ? options.stateFile : undefined
    this.#logger = (options.logger ?? silentLogger).child({
      token_url: this.#endpoint,
      client_id: config.client_id,
    })
    this.#now = options.now ?? Date.now
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
    this.#refreshToken = config.refresh_token
  }

  /** A valid access token: the cached one, or a fetched one (see the file header). */
  async token(signal: AbortSignal): Promise<AccessToken> {
    if (this.#closed) throw this.#closedError()
    const now = this.#now()
    const current = this.#current
    if (current !== undefined && now < current.expiresAt) {
      if (now >= current.refreshAt && this.#flight === undefined && now >= this.#retryAfter)
        void this.#start(true)
      return view(current, false)
    }
    const started = performance.now()
    const fresh = await abortable(this.#flight ?? this.#start(false), signal)
    return view(fresh, true, (performance.now() - started) / 1000)
  }

  /**
   * The server refused `token` as expired or invalid: drop it if it is still the cached one, so that the
   * next token() fetches. Returns whether it was dropped (false: a newer token is cached already).
   */
  expired(token: Pick<AccessToken, 'accessToken'>): boolean {
    if (this.#current?.accessToken !== token.accessToken) return false
    this.#current = undefined
    return true
  }

  /** Drops the cached token, whatever it is: the next token() fetches. */
  invalidate(): void {
    this.#current = undefined
  }

  /** Resolves when no fetch is in flight (a background refresh included, with its state file write). */
  async idle(): Promise<void> {
    while (this.#flight !== undefined) await this.#flight.then(ignore, ignore)
  }

  /** Abandons a fetch in flight, drops the token; token() then rejects with TokenError closed. */
  async close(): Promise<void> {
    this.#closed = true
    this.#current = undefined
    this.#closer.abort()
    await this.idle()
  }

  toJSON() {
    const current = this.#current
    return {
      token_url: this.#endpoint,
      client_id: this.#config.client_id,
      grant: this.#config.grant,
      scopes: this.#config.scopes,
      state_file: this.#stateFile ?? null,
      token: current === undefined ? null : { expires_at: new Date(current.expiresAt).toISOString() },
    }
  }

  [inspect.custom](): string {
    return `TokenSource ${JSON.stringify(this.toJSON())}`
  }

  #closedError() {
    return new TokenError('closed', `the token source for ${this.#endpoint} is closed`)
  }

  /** Starts the one fetch; `background`: nobody waits for it, so its failure is logged here. */
  #start(background: boolean): Promise<Cached> {
    const flight: Promise<Cached> = this.#fetch()
      .catch((err: unknown) => {
        if (background) {
          this.#retryAfter = this.#now() + REFRESH_RETRY_MS
          this.#logger.warn('oauth2 token refresh failed; the cached token is used until it expires', {
            err: err instanceof Error ? err.message : String(err),
          })
        }
        throw err
      })
      .finally(() => {
        if (this.#flight === flight) this.#flight = undefined
      })
    // Every waiter may have given up: the rejection must still count as handled.
    flight.catch(ignore)
    this.#flight = flight
    return flight
  }

  async #fetch(): Promise<Cached> {
    await (this.#stateLoaded ??= this.#loadState())
    const config = this.#config
    const used = this.#refreshToken
    const form = new URLSearchParams({ grant_type: config.grant, client_id: config.client_id })
    if (config.client_secret !== undefined) form.set('client_secret', config.client_secret.reveal())
    if (config.scopes.length > 0) form.set('scope', config.scopes.join(' '))
    if (config.grant === 'refresh_token' && used !== undefined) form.set('refresh_token', used.reveal())
    for (const [name, value] of Object.entries(config.endpoint_params))
      if (!form.has(name)) form.set(name, value)

    const sentAt = this.#now()
    const started = performance.now()
    const signal = AbortSignal.any([AbortSignal.timeout(this.#timeoutMs), this.#closer.signal])
    const secrets = this.#secrets()
    const answer = await postForm({ url: this.#url, form, tls: config.tls_config, signal, secrets })
    const grant = readGrant(answer, this.#endpoint, `the ${config.grant} grant`, secrets)

    const rotated =
      config.grant === 'refresh_token' &&
      grant.refreshToken !== undefined &&
      grant.refreshToken !== used?.reveal()
    if (rotated && grant.refreshToken !== undefined) {
      this.#refreshToken = new Secret(grant.refreshToken)
      await this.#persist(grant.refreshToken)
    }
    const lifetime = Math.min(grant.expiresIn ?? DEFAULT_LIFETIME_SECONDS, MAX_LIFETIME_SECONDS)
    const expiresAt = sentAt + lifetime * 1000
    const cached: Cached = {
      accessToken: new Secret(grant.accessToken),
      lifetime,
      expiresAt,
      refreshAt: expiresAt - refreshMargin(lifetime) * 1000,
    }
    if (!this.#closed) this.#current = cached
    this.#logger.debug('oauth2 token fetched', {
      grant: config.grant,
      expires_in_seconds: lifetime,
      default_lifetime: grant.expiresIn === undefined,
      refresh_token_rotated: rotated,
      seconds: (performance.now() - started) / 1000,
    })
    return cached
  }

  /** Every secret a message could be tricked into quoting. */
  #secrets(): string[] {
    return [
      this.#config.client_secret?.reveal(),
      this.#config.refresh_token?.reveal(),
      this.#refreshToken?.reveal(),
      this.#current?.accessToken.reveal(),
    ].filter((s): s is string => s !== undefined)
  }

  #owner(): RefreshOwner | undefined {
    const configured = this.#config.refresh_token
    if (configured === undefined) return undefined
    return {
      token_url: this.#config.token_url,
      client_id: this.#config.client_id,
      configured: configured.reveal(),
    }
  }

  async #loadState(): Promise<void> {
    const owner = this.#owner()
    if (this.#stateFile === undefined || owner === undefined) return
    const state_file = this.#stateFile
    const loaded = await loadRefreshState(state_file, owner)
    switch (loaded.status) {
      case 'missing':
        return
      case 'used':
        this.#refreshToken = new Secret(loaded.refreshToken)
        this.#logger.info('oauth2: using the rotated refresh token from the state file', { state_file })
        return
      case 'other_owner':
        this.#logger.info(
          'oauth2: the state file is for another client or an older configured refresh token; using the configured one',
          { state_file },
        )
        return
      case 'unreadable':
        this.#logger.warn(
          `oauth2: ignoring the state file (${loaded.problem}); using the configured refresh token`,
          {
            state_file,
          },
        )
        return
    }
  }

  async #persist(refreshToken: string): Promise<void> {
    const owner = this.#owner()
    if (owner === undefined) return
    if (this.#stateFile === undefined) {
      if (!this.#toldNoStateFile)
        this.#logger.info(
          'oauth2: the endpoint rotates refresh tokens, and no state file keeps them across restarts',
        )
      this.#toldNoStateFile = true
      return
    }
    const state_file = this.#stateFile
    try {
      await saveRefreshState(state_file, owner, refreshToken, new Date(this.#now()))
      this.#logger.debug('oauth2: rotated refresh token saved', { state_file })
    } catch (err) {
      // The new token still works from memory; a restart would go back to one the endpoint may have revoked.
      this.#logger.error(
        'oauth2: cannot save the rotated refresh token; after a restart the previous one is used',
        {
          state_file,
          err: (err as NodeJS.ErrnoException).code ?? String(err),
        },
      )
    }
  }
}
