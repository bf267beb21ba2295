// TokenError: why no access token could be had, as a code plus a message for a person that never holds a secret.

/** RFC 6749 5.2 error codes; an endpoint's `error` outside this list becomes `http_<status>`. */
export const ENDPOINT_ERRORS = [
  'invalid_request',
  'invalid_client',
  'invalid_grant',
  'unauthorized_client',
  'unsupported_grant_type',
  'invalid_scope',
] as const
export type EndpointErrorCode = (typeof ENDPOINT_ERRORS)[number]

/**
 * - an RFC 6749 code: the endpoint refused, and said why;
 * - `http_<status>`: it refused with another status (or an `error` outside RFC 6749), a redirect included;
 * - `bad_response`: it answered 200 with something that is not a usable token, or more than 64 KiB;
 * - `timeout`: the exchange took longer than the source's own timeout;
 * - `network`, `tls`: no answer (refused, reset, DNS; a certificate that does not verify);
 * - `closed`: the source was closed.
 */
export type TokenErrorCode =
  EndpointErrorCode | `http_${number}` | 'bad_response' | 'timeout' | 'network' | 'tls' | 'closed'

export interface TokenErrorDetails {
  /** The HTTP status, when the endpoint answered. */
  status?: number
  /** The endpoint's `error` and `error_description`, already made printable and redacted. */
  endpointError?: string
  endpointDescription?: string
  cause?: unknown
}

export class TokenError extends Error {
  override name = 'TokenError'
  readonly code: TokenErrorCode
  readonly status: number | undefined
  readonly endpointError: string | undefined
  readonly endpointDescription: string | undefined
  constructor(code: TokenErrorCode, message: string, details: TokenErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause })
    this.code = code
    this.status = details.status
    this.endpointError = details.endpointError
    this.endpointDescription = details.endpointDescription
  }
}

export const isEndpointError = (code: string): code is EndpointErrorCode =>
  (ENDPOINT_ERRORS as readonly string[]).includes(code)

/**
 * Text from the endpoint (or the network) for a message: every known secret replaced by `<secret>`
 * first (a secret cut in half by the length bound would otherwise leak its start), then cut to `max`
 * characters and JSON-quoted with everything outside printable ASCII escaped, so that a hostile
 * endpoint can neither forge log lines nor hide text with control or bidi characters.
 */
export function printable(text: string, secrets: readonly string[], max = 300): string {
  let clean = text
  for (const secret of secrets) if (secret !== '') clean = clean.split(secret).join('<secret>')
  const short = clean.length > max ? `${clean.slice(0, max)}...` : clean
  return JSON.stringify(short).replace(
    /[^\x20-\x7e]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  )
}
