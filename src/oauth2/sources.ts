// TokenSources: the exporter's token sources, one per distinct oauth2 section, kept across probes and
// config reloads (a reload that keeps a section keeps its cached token and rotated refresh token).
import { createHash } from 'node:crypto'
import { silentLogger, type Logger } from '../logger.ts'
import { TokenSource, type OAuth2Config } from './token-source.ts'

/** At most this many sources are kept: the least recently used one is closed beyond. */
const MAX_SOURCES = 64

/** What makes two oauth2 sections the same client: every field (secrets only as a hash). */
function fingerprint(config: OAuth2Config): string {
  const hash = createHash('sha256')
  hash.update(
    JSON.stringify([
      config.token_url,
      config.client_id,
      config.client_secret?.reveal() ?? null,
      config.scopes,
      config.endpoint_params,
      config.grant,
      config.refresh_token?.reveal() ?? null,
      config.state_file ?? null,
      // All of it (CA, client certificate and key, server name, versions): any of them makes another client.
      config.tls_config ?? null,
    ]),
  )
  return hash.digest('hex')
}

export class TokenSources {
  readonly #sources = new Map<string, TokenSource>()
  readonly #logger: Logger

  /** `logger` is the process logger: a source outlives the probe that made it. */
  constructor(logger: Logger = silentLogger) {
    this.#logger = logger
  }

  /** The source of this section: the one made before for the same section, or a new one. */
  for(config: OAuth2Config): TokenSource {
    const key = fingerprint(config)
    let source = this.#sources.get(key)
    if (source) {
      this.#sources.delete(key) // re-inserted below: the Map's order is the LRU order
    } else {
      source = new TokenSource(config, { stateFile: config.state_file, logger: this.#logger })
      const oldest = this.#sources.size >= MAX_SOURCES ? this.#sources.keys().next().value : undefined
      if (oldest !== undefined) {
        void this.#sources.get(oldest)?.close()
        this.#sources.delete(oldest)
      }
    }
    this.#sources.set(key, source)
    return source
  }

  async close(): Promise<void> {
    await Promise.all([...this.#sources.values()].map((s) => s.close()))
    this.#sources.clear()
  }
}
