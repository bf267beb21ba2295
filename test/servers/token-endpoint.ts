// An in-process OAuth2 token endpoint over HTTPS on 127.0.0.1 (throwaway CA from certs.ts): client_credentials
// and refresh_token grants, rotation and revocation of refresh tokens, faults (stall, garbage, huge bodies,
// any status), and token introspection (introspect(), and RFC 7662 POST /introspect for Dovecot's oauth2 passdb).
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { TestContext } from 'node:test'
import { certs } from './certs.ts'

export interface TokenClient {
  /** undefined: a public client, which sends no secret (refresh_token grant only). */
  secret: string | undefined
  /** Whom its client_credentials tokens are for (introspection's username); default the client id. */
  username?: string
}

export interface TokenEndpointOptions {
  /** client_id -> client; default one client, `probe-client` with secret `probe-secret`. */
  clients?: Record<string, TokenClient>
  /** expires_in of new tokens in seconds; null leaves expires_in out. Default 3600. */
  lifetime?: number | null
  /** Answer every refresh_token grant with a new refresh token, and revoke the one that was used. */
  rotate?: boolean
  /** The port on 127.0.0.1; default 0 (any free one). The mail stack's Dovecot asks a fixed one. */
  port?: number
  /**
   * The certificate to serve instead of certs()' leaf, and the CA that signed it (becomes `caFile`/`ca`):
   * the mail stack issues one that its Dovecot trusts (MailStack.oauth2).
   */
  tls?: { certFile: string; keyFile: string; caFile: string }
}

/** What the endpoint does instead of answering normally (until `fault` is set back to undefined). */
export type TokenFault =
  /** Read the request, never answer (closed with the server). */
  | { kind: 'stall' }
  /** 200 with an HTML body. */
  | { kind: 'garbage' }
  /** 200 with `bytes` of JSON-looking text, streamed (chunked) unless `declareLength`. */
  | { kind: 'huge'; bytes: number; declareLength?: boolean }
  /** Any status and body. */
  | { kind: 'status'; status: number; body: string; contentType?: string; headers?: Record<string, string> }
  /** A hostile endpoint: invalid_client whose error_description quotes every form field it got. */
  | { kind: 'echo' }

export interface RecordedRequest {
  method: string
  path: string
  contentType: string
  authorization: string | undefined
  /** The form as sent (secrets included: this is the test's side). */
  form: Record<string, string>
  grant: string | undefined
}

export interface Introspection {
  active: boolean
  username?: string
  client_id?: string
  scope?: string
  /** Seconds since the epoch. */
  exp?: number
}

export interface TokenEndpoint {
  /** https://127.0.0.1:port/token */
  url: string
  /** https://127.0.0.1:port/introspect (RFC 7662, form field `token`). */
  introspectionUrl: string
  caFile: string
  ca: Buffer
  requests: RecordedRequest[]
  /** Token requests seen (to /token), of one grant type if given. */
  count(grant?: string): number
  /** expires_in of tokens issued from now on; null leaves it out. */
  lifetime: number | null
  rotate: boolean
  fault: TokenFault | undefined
  /** Waits this long before each answer (faults included). */
  delayMs: number
  /** Bytes of the last huge body handed to the socket, and whether all of it was. */
  huge: { sent: number; finished: boolean }
  /** A new refresh token for `username`, usable by `clientId` (default the first client). */
  issueRefreshToken(username: string, clientId?: string): string
  /** Revokes a refresh or access token: a refresh_token grant with it is then invalid_grant. */
  revoke(token: string): void
  /** Whether an access token is active, and for whom (what POST /introspect answers). */
  introspect(token: string): Introspection
  /** Access tokens issued so far, in order. */
  issued: string[]
  close(): Promise<void>
}

interface Issued {
  username: string
  clientId: string
  scope: string | undefined
  /** ms since the epoch (real time); undefined: no expiry. */
  expiresAt: number | undefined
}

const opaque = (prefix: string) => `${prefix}${randomBytes(24).toString('base64url')}`

function readBody(req: IncomingMessage, max: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size <= max) chunks.push(chunk)
    })
    req.on('end', () => resolve(size > max ? undefined : Buffer.concat(chunks).toString('utf8')))
    req.on('error', () => resolve(undefined))
  })
}

function json(res: ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' })
  res.end(JSON.stringify(body))
}

/** Writes `bytes` with backpressure until done or the client goes away; counts what was handed over. */
async function streamHuge(
  res: ServerResponse,
  bytes: number,
  declareLength: boolean,
  huge: TokenEndpoint['huge'],
) {
  huge.sent = 0
  huge.finished = false
  res.writeHead(200, {
    'content-type': 'application/json',
    ...(declareLength ? { 'content-length': String(bytes) } : {}),
  })
  const client = { gone: false }
  res.on('close', () => (client.gone = true))
  const head = '{"access_token":"'
  const chunk = Buffer.alloc(16 * 1024, 'a')
  res.write(head)
  huge.sent = head.length
  while (!client.gone && huge.sent < bytes) {
    const piece = chunk.subarray(0, Math.min(chunk.length, bytes - huge.sent))
    huge.sent += piece.length
    if (!res.write(piece))
      await new Promise<void>((resolve) => {
        res.once('drain', resolve)
        res.once('close', resolve)
      })
  }
  if (!client.gone) {
    huge.finished = true
    res.end()
  }
}

/** The certificate to serve and the CA to trust for it: certs()' by default. */
function serverTls(given: TokenEndpointOptions['tls']) {
  if (given === undefined) {
    const set = certs()
    return { cert: set.good.cert, key: set.good.key, caFile: set.caFile, ca: set.ca }
  }
  return {
    cert: readFileSync(given.certFile),
    key: readFileSync(given.keyFile),
    caFile: given.caFile,
    ca: readFileSync(given.caFile),
  }
}

export async function tokenEndpoint(
  t: TestContext | undefined,
  options: TokenEndpointOptions = {},
): Promise<TokenEndpoint> {
  const tls = serverTls(options.tls)
  const clients = options.clients ?? { 'probe-client': { secret: 'probe-secret' } }
  const accessTokens = new Map<string, Issued>()
  const refreshTokens = new Map<string, { username: string; clientId: string }>()
  const firstClient = Object.keys(clients)[0] ?? 'probe-client'

  const issue = (username: string, clientId: string, scope: string | undefined) => {
    const token = opaque('at-')
    const lifetime = endpoint.lifetime
    accessTokens.set(token, {
      username,
      clientId,
      scope,
      expiresAt: lifetime === null ? undefined : Date.now() + lifetime * 1000,
    })
    endpoint.issued.push(token)
    return {
      access_token: token,
      token_type: 'Bearer',
      ...(lifetime === null ? {} : { expires_in: lifetime }),
      ...(scope === undefined ? {} : { scope }),
    }
  }

  const introspect = (token: string): Introspection => {
    const found = accessTokens.get(token)
    if (found === undefined || (found.expiresAt !== undefined && found.expiresAt <= Date.now()))
      return { active: false }
    return {
      active: true,
      username: found.username,
      client_id: found.clientId,
      ...(found.scope === undefined ? {} : { scope: found.scope }),
      ...(found.expiresAt === undefined ? {} : { exp: Math.floor(found.expiresAt / 1000) }),
    }
  }

  const handleToken = (res: ServerResponse, request: RecordedRequest) => {
    const form = request.form
    const fault = endpoint.fault
    if (fault?.kind === 'echo') {
      json(res, 401, {
        error: 'invalid_client',
        error_description: `you sent ${Object.entries(form)
          .map(([k, v]) => `${k}=${v}`)
          .join(' ')}`,
      })
      return
    }
    if (!request.contentType.startsWith('application/x-www-form-urlencoded')) {
      json(res, 400, { error: 'invalid_request', error_description: 'expected a form' })
      return
    }
    // Client authentication: in the body (client_secret_post) or HTTP Basic.
    let clientId = form['client_id']
    let secret = form['client_secret']
    const basic = /^Basic (.+)$/i.exec(request.authorization ?? '')?.[1]
    if (basic !== undefined) {
      const [id, pass] = Buffer.from(basic, 'base64').toString('utf8').split(':')
      clientId = decodeURIComponent(id ?? '')
      secret = decodeURIComponent(pass ?? '')
    }
    const client = clientId === undefined ? undefined : clients[clientId]
    if (clientId === undefined || client === undefined || client.secret !== secret) {
      json(res, 401, { error: 'invalid_client', error_description: 'client authentication failed' })
      return
    }
    const scope = form['scope']
    switch (request.grant) {
      case 'client_credentials':
        if (client.secret === undefined) {
          json(res, 400, { error: 'unauthorized_client', error_description: 'public clients cannot' })
          return
        }
        json(res, 200, issue(client.username ?? clientId, clientId, scope))
        return
      case 'refresh_token': {
        const used = form['refresh_token'] ?? ''
        const owner = refreshTokens.get(used)
        if (owner === undefined || owner.clientId !== clientId) {
          json(res, 400, {
            error: 'invalid_grant',
            error_description: 'AADSTS70008: The refresh token has expired or is invalid due to revocation.',
          })
          return
        }
        const answer: Record<string, unknown> = issue(owner.username, clientId, scope)
        if (endpoint.rotate) {
          refreshTokens.delete(used)
          answer['refresh_token'] = endpoint.issueRefreshToken(owner.username, clientId)
        }
        json(res, 200, answer)
        return
      }
      case undefined:
      default:
        json(res, 400, {
          error: 'unsupported_grant_type',
          error_description: 'only client_credentials and refresh_token',
        })
    }
  }

  const onRequest = async (req: IncomingMessage, res: ServerResponse) => {
    const body = await readBody(req, 64 * 1024)
    const path = (req.url ?? '/').split('?')[0] ?? '/'
    const form = Object.fromEntries(new URLSearchParams(body ?? ''))
    const request: RecordedRequest = {
      method: req.method ?? '',
      path,
      contentType: req.headers['content-type'] ?? '',
      authorization: req.headers.authorization,
      form,
      grant: form['grant_type'],
    }
    endpoint.requests.push(request)
    if (endpoint.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, endpoint.delayMs))
    if (req.method !== 'POST' || body === undefined) {
      json(res, req.method === 'POST' ? 413 : 405, { error: 'invalid_request' })
      return
    }
    if (path === '/introspect') {
      const token = form['token']
      json(res, 200, token === undefined ? { active: false } : withEmail(introspect(token)))
      return
    }
    if (path !== '/token') {
      json(res, 404, { error: 'not_found' })
      return
    }
    const fault = endpoint.fault
    switch (fault?.kind) {
      case 'stall':
        return
      case 'garbage':
        res.writeHead(200, { 'content-type': 'text/html' })
        res.end('<html><body>Sign in to continue</body></html>')
        return
      case 'huge':
        await streamHuge(res, fault.bytes, fault.declareLength ?? false, endpoint.huge)
        return
      case 'status':
        res.writeHead(fault.status, {
          'content-type': fault.contentType ?? 'application/json',
          ...fault.headers,
        })
        res.end(fault.body)
        return
      case 'echo':
      case undefined:
        handleToken(res, request)
    }
  }

  const server: Server = createServer({ cert: tls.cert, key: tls.key }, (req, res) => {
    void onRequest(req, res)
  })
  await new Promise<void>((resolve, reject) => {
    // a fixed port may be taken: reject instead of an unhandled 'error'
    server.once('error', reject)
    server.listen(options.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const { port } = server.address() as AddressInfo

  const endpoint: TokenEndpoint = {
    url: `https://127.0.0.1:${String(port)}/token`,
    introspectionUrl: `https://127.0.0.1:${String(port)}/introspect`,
    caFile: tls.caFile,
    ca: tls.ca,
    requests: [],
    count: (grant) =>
      endpoint.requests.filter((r) => r.path === '/token' && (grant === undefined || r.grant === grant))
        .length,
    lifetime: options.lifetime === undefined ? 3600 : options.lifetime,
    rotate: options.rotate ?? false,
    fault: undefined,
    delayMs: 0,
    huge: { sent: 0, finished: false },
    issued: [],
    issueRefreshToken(username, clientId = firstClient) {
      const token = opaque('rt-')
      refreshTokens.set(token, { username, clientId })
      return token
    },
    revoke(token) {
      refreshTokens.delete(token)
      accessTokens.delete(token)
    },
    introspect,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
  t?.after(() => endpoint.close())
  return endpoint
}

/** Dovecot's oauth2 passdb takes the user from `username_attribute`, `email` by default: give both. */
const withEmail = (i: Introspection) => (i.username === undefined ? i : { ...i, email: i.username })
