// One token request: a bounded HTTPS POST of a form (node:https, no redirects, at most 64 KiB back) and the
// reading of its answer (RFC 6749 5.1 and 5.2) into a token or a TokenError.
import https from 'node:https'
import { isIP } from 'node:net'
import type { TlsConfig } from '../protocol/connection.ts'
import { VERSION } from '../version.ts'
import { isEndpointError, printable, TokenError, type TokenErrorCode } from './token-error.ts'

/** The most of an answer that is read; a longer one is cut off and is a bad_response. */
export const MAX_BODY_BYTES = 64 * 1024

// As protocol/connection.ts maps them (not exported there; its tlsOptions verifies after the handshake, we before).
const TLS_VERSION = { TLS10: 'TLSv1', TLS11: 'TLSv1.1', TLS12: 'TLSv1.2', TLS13: 'TLSv1.3' } as const

/** The endpoint as messages name it: origin and path, never a query string (it may carry anything). */
export const endpointName = (url: URL) => `${url.origin}${url.pathname}`

export interface FormPost {
  url: URL
  form: URLSearchParams
  tls: TlsConfig | undefined
  /** Bounds the whole exchange: connect, TLS, request, answer. Its reason decides timeout or closed. */
  signal: AbortSignal
  /** Secrets to redact from any text a message quotes. */
  secrets: readonly string[]
  maxBytes?: number
}

export interface FormAnswer {
  status: number
  contentType: string
  body: Buffer
}

/** Codes of certificate problems (OpenSSL's verify errors, Node's name check, handshake failures). */
const TLS_CODE = /CERT|SSL|TLS|SIGNATURE|ISSUER|HOSTNAME|ALTNAME/

function abortReason(signal: AbortSignal, endpoint: string): TokenError {
  const reason: unknown = signal.reason
  if (reason instanceof TokenError) return reason
  if (reason instanceof Error && reason.name === 'TimeoutError')
    return new TokenError('timeout', `token endpoint ${endpoint} did not answer in time`, { cause: reason })
  return new TokenError('closed', `token request to ${endpoint} abandoned: the token source was closed`)
}

function networkError(err: Error, endpoint: string, secrets: readonly string[]): TokenError {
  const code = (err as NodeJS.ErrnoException).code ?? ''
  const detail = printable(code === '' ? err.message : `${code}: ${err.message}`, secrets, 200)
  if (TLS_CODE.test(code))
    return new TokenError('tls', `TLS with token endpoint ${endpoint} failed: ${detail}`, { cause: err })
  return new TokenError('network', `cannot reach token endpoint ${endpoint}: ${detail}`, { cause: err })
}

/**
 * POSTs `form` as application/x-www-form-urlencoded. The certificate must verify (against tls.ca when
 * given, else the system's CAs; against tls.server_name when given, else the URL's host). A 3xx is
 * returned like any other status: redirects are not followed, so the secret in the body goes nowhere
 * but the configured URL.
 */
export function postForm(post: FormPost): Promise<FormAnswer> {
  const { url, signal, secrets, tls } = post
  const maxBytes = post.maxBytes ?? MAX_BODY_BYTES
  const endpoint = endpointName(url)
  if (signal.aborted) return Promise.reject(abortReason(signal, endpoint))
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1')
  const serverName = tls?.server_name
  const body = Buffer.from(post.form.toString(), 'utf8')
  return new Promise<FormAnswer>((resolve, reject) => {
    let settled = false
    const finish = (err: TokenError | undefined, answer?: FormAnswer) => {
      if (settled) return
      settled = true
      signal.removeEventListener('abort', onAbort)
      if (err) {
        request.destroy()
        reject(err)
      } else if (answer) resolve(answer)
    }
    const onAbort = () => finish(abortReason(signal, endpoint))
    const tooLarge = () =>
      new TokenError(
        'bad_response',
        `token endpoint ${endpoint} sent more than ${String(maxBytes)} bytes; the rest was not read`,
      )
    const request = https.request({
      method: 'POST',
      host,
      port: url.port === '' ? 443 : Number(url.port),
      path: `${url.pathname}${url.search}`,
      // A connection per request: tokens are fetched a few times an hour, and no pooled socket outlives the source.
      agent: false,
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        'content-length': String(body.length),
        accept: 'application/json',
        'user-agent': `mailprobe_exporter/${VERSION}`,
      },
      rejectUnauthorized: true,
      ...(serverName !== undefined ? { servername: serverName } : {}),
      ...(serverName === undefined && isIP(host) === 0 ? { servername: host } : {}),
      ...(tls?.ca ? { ca: tls.ca } : {}),
      ...(tls?.cert ? { cert: tls.cert } : {}),
      ...(tls?.key ? { key: tls.key } : {}),
      ...(tls?.min_version ? { minVersion: TLS_VERSION[tls.min_version] } : {}),
      ...(tls?.max_version ? { maxVersion: TLS_VERSION[tls.max_version] } : {}),
    })
    signal.addEventListener('abort', onAbort, { once: true })
    request.on('error', (err) => finish(networkError(err, endpoint, secrets)))
    request.on('response', (response) => {
      const declared = Number(response.headers['content-length'] ?? NaN)
      if (declared > maxBytes) {
        finish(tooLarge())
        return
      }
      const chunks: Buffer[] = []
      let size = 0
      response.on('data', (chunk: Buffer) => {
        size += chunk.length
        if (size > maxBytes) finish(tooLarge())
        else chunks.push(chunk)
      })
      response.on('error', (err) => finish(networkError(err, endpoint, secrets)))
      response.on('close', () => {
        if (!response.complete)
          finish(new TokenError('network', `token endpoint ${endpoint} closed the connection mid-answer`))
      })
      response.on('end', () =>
        finish(undefined, {
          status: response.statusCode ?? 0,
          contentType: response.headers['content-type'] ?? '',
          body: Buffer.concat(chunks),
        }),
      )
    })
    request.end(body)
  })
}

/** A token as the endpoint granted it (RFC 6749 5.1). */
export interface Grant {
  accessToken: string
  /** expires_in in seconds, when the endpoint said. */
  expiresIn: number | undefined
  /** A new refresh token, when the endpoint rotated it. */
  refreshToken: string | undefined
  scope: string | undefined
}

/** A token as RFC 6750 b64token allows it, generously: printable ASCII, no space. */
const TOKEN_TEXT = /^[\x21-\x7e]+$/

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

function describeBody(answer: FormAnswer): string {
  // Only the media type, in the characters a media type has: it is the endpoint's text, unquoted here.
  const type = (answer.contentType.split(';')[0] ?? '')
    .trim()
    .slice(0, 60)
    .replace(/[^\w.+/-]/g, '?')
  return `${type === '' ? 'no content type' : type}, ${String(answer.body.length)} bytes`
}

/**
 * Reads the answer to a token request: 200 with a Bearer token is a Grant; an RFC 6749 error (any
 * status) is a TokenError with that code, quoting error and error_description; anything else is
 * `http_<status>` or `bad_response`. `what` names the request ("the client_credentials grant").
 */
export function readGrant(
  answer: FormAnswer,
  endpoint: string,
  what: string,
  secrets: readonly string[],
): Grant {
  let data: unknown
  try {
    data = JSON.parse(answer.body.toString('utf8'))
  } catch {
    data = undefined
  }
  const { status } = answer
  if (isObject(data) && typeof data['error'] === 'string') {
    const error = data['error']
    const rawDescription = data['error_description']
    const description = typeof rawDescription === 'string' ? printable(rawDescription, secrets) : undefined
    const shownError = printable(error, secrets, 60)
    const code: TokenErrorCode = isEndpointError(error)
      ? error
      : status === 200
        ? 'bad_response'
        : `http_${status}`
    return fail(
      code,
      `token endpoint ${endpoint} refused ${what}: ${String(status)} ${shownError}${description === undefined ? '' : ` ${description}`}`,
      {
        status,
        endpointError: shownError,
        ...(description === undefined ? {} : { endpointDescription: description }),
      },
    )
  }
  if (status !== 200) {
    const location = status >= 300 && status < 400 ? ' (redirects are not followed)' : ''
    return fail(
      `http_${status}`,
      `token endpoint ${endpoint} answered ${what} with status ${String(status)}${location} (${describeBody(answer)})`,
      { status },
    )
  }
  const bad = (why: string) =>
    fail('bad_response', `token endpoint ${endpoint} answered ${what} with ${why}`, { status })
  if (data === undefined) return bad(`a body that is not JSON (${describeBody(answer)})`)
  if (!isObject(data)) return bad('JSON that is not an object')
  const accessToken = data['access_token']
  if (typeof accessToken !== 'string' || !TOKEN_TEXT.test(accessToken))
    return bad('no access_token, or one that is not printable ASCII without spaces')
  const tokenType = data['token_type']
  if (tokenType !== undefined && (typeof tokenType !== 'string' || tokenType.toLowerCase() !== 'bearer'))
    return bad(
      `token_type ${printable(typeof tokenType === 'string' ? tokenType : JSON.stringify(tokenType), secrets, 40)}, not Bearer`,
    )
  const rawExpiresIn = data['expires_in']
  // RFC 6749 says a number; some endpoints (Azure AD v1) send a string of digits.
  const expiresIn =
    rawExpiresIn === undefined || rawExpiresIn === null
      ? undefined
      : typeof rawExpiresIn === 'string' && /^\d{1,10}$/.test(rawExpiresIn)
        ? Number(rawExpiresIn)
        : rawExpiresIn
  if (
    expiresIn !== undefined &&
    (typeof expiresIn !== 'number' || !Number.isFinite(expiresIn) || expiresIn <= 0)
  )
    return bad(
      `expires_in ${printable(JSON.stringify(rawExpiresIn), secrets, 40)}, not a positive number of seconds`,
    )
  const refreshToken = data['refresh_token']
  if (
    refreshToken !== undefined &&
    refreshToken !== null &&
    (typeof refreshToken !== 'string' || !TOKEN_TEXT.test(refreshToken))
  )
    return bad('a refresh_token that is not printable ASCII without spaces')
  const scope = data['scope']
  return {
    accessToken,
    expiresIn,
    refreshToken: typeof refreshToken === 'string' ? refreshToken : undefined,
    scope: typeof scope === 'string' ? scope : undefined,
  }
}

function fail(
  code: TokenErrorCode,
  message: string,
  details: ConstructorParameters<typeof TokenError>[2],
): never {
  throw new TokenError(code, message, details)
}
