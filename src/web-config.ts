// --web.config.file: exporter-toolkit's web config (TLS, client certificates, basic auth, headers) and the server it shapes.
import { createHash, createHmac, randomBytes, timingSafeEqual, X509Certificate } from 'node:crypto'
import { createServer as createHttpServer, type IncomingMessage, type RequestListener } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { isIPv6 } from 'node:net'
import { dirname, resolve } from 'node:path'
import { createSecureContext, TLSSocket } from 'node:tls'
import bcrypt from 'bcryptjs'
import { z } from 'zod'
import type { Logger } from './logger.ts'
import { Secret } from './secret.ts'
import { loadYamlFile, parseYamlFile, readSettingFile } from './yaml-file.ts'

// ---------------------------------------------------------------- schema

const CLIENT_AUTH_TYPES = [
  'NoClientCert',
  'RequestClientCert',
  'RequireAnyClientCert',
  'VerifyClientCertIfGiven',
  'RequireAndVerifyClientCert',
] as const
export type ClientAuthType = (typeof CLIENT_AUTH_TYPES)[number]

const TLS_VERSIONS = { TLS10: 'TLSv1', TLS11: 'TLSv1.1', TLS12: 'TLSv1.2', TLS13: 'TLSv1.3' } as const
const TlsVersion = z.enum(['TLS10', 'TLS11', 'TLS12', 'TLS13'])

// exporter-toolkit's own list (web/handler.go): only these headers, some with fixed values.
const EXTRA_HEADERS: Record<string, readonly string[] | undefined> = {
  'Strict-Transport-Security': undefined,
  'X-Content-Type-Options': ['nosniff'],
  'X-Frame-Options': ['deny', 'sameorigin'],
  'X-XSS-Protection': undefined,
  'Content-Security-Policy': undefined,
}

// $2$, $2a$, $2b$ (bcryptjs, Go) and $2y$ (htpasswd); cost 4..31; 22 characters of salt, 31 of digest.
const BCRYPT_HASH = /^\$2[aby]?\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/

/** A key of the toolkit's format that we do not implement: an error, never silently ignored. */
function unsupported(key: string, why = '') {
  return z
    .undefined({
      error: `"${key}" (an exporter-toolkit setting) is not supported by mailprobe_exporter${why}; remove it`,
    })
    .optional()
}

function requiredPath(key: string) {
  return z
    .string({
      error: (iss) => (iss.input === undefined ? `${key} is required in tls_server_config` : undefined),
    })
    .min(1)
}

function tlsSchema(baseDir: string) {
  return z
    .strictObject({
      cert_file: requiredPath('cert_file'),
      key_file: requiredPath('key_file'),
      client_auth_type: z.enum(CLIENT_AUTH_TYPES).default('NoClientCert'),
      client_ca_file: z.string().min(1).optional(),
      client_allowed_sans: z.array(z.string().min(1)).optional(),
      min_version: TlsVersion.default('TLS12'),
      max_version: TlsVersion.default('TLS13'),
      cert: unsupported('cert', ' (use cert_file)'),
      key: unsupported('key', ' (use key_file)'),
      client_ca: unsupported('client_ca', ' (use client_ca_file)'),
      cipher_suites: unsupported('cipher_suites', " (Node's default cipher list is used)"),
      curve_preferences: unsupported('curve_preferences'),
      prefer_server_cipher_suites: unsupported('prefer_server_cipher_suites'),
    })
    .transform((raw, ctx) => {
      const issue = (key: string, message: string) =>
        ctx.issues.push({ code: 'custom', input: raw, path: [key], message })
      const auth = raw.client_auth_type
      if (raw.client_ca_file !== undefined && auth === 'NoClientCert')
        issue('client_ca_file', 'client_ca_file is set, but client_auth_type is NoClientCert')
      if (
        raw.client_ca_file === undefined &&
        (auth === 'VerifyClientCertIfGiven' || auth === 'RequireAndVerifyClientCert')
      )
        issue('client_auth_type', `${auth} needs client_ca_file (the CA that signs client certificates)`)
      if (
        raw.client_allowed_sans !== undefined &&
        auth !== 'RequireAnyClientCert' &&
        auth !== 'RequireAndVerifyClientCert'
      )
        issue(
          'client_allowed_sans',
          'client_allowed_sans needs client_auth_type RequireAnyClientCert or RequireAndVerifyClientCert',
        )
      if (raw.min_version > raw.max_version) issue('min_version', 'min_version is above max_version')

      // Relative paths are relative to the web config file, as in exporter-toolkit.
      const cert = readSettingFile(resolve(baseDir, raw.cert_file), ctx, 'cert_file')
      const key = readSettingFile(resolve(baseDir, raw.key_file), ctx, 'key_file')
      const ca =
        raw.client_ca_file === undefined
          ? undefined
          : readSettingFile(resolve(baseDir, raw.client_ca_file), ctx, 'client_ca_file')
      if (cert !== undefined && key !== undefined) {
        try {
          createSecureContext({ cert, key })
        } catch (err) {
          issue(
            'cert_file',
            `cert_file and key_file are not a usable certificate and key: ${(err as Error).message}`,
          )
        }
      }
      if (ca !== undefined && !pemCertificates(ca))
        issue('client_ca_file', 'no PEM certificate in client_ca_file')
      if (cert === undefined || key === undefined) return z.NEVER
      return {
        cert,
        key,
        ca,
        clientAuth: auth,
        allowedSans: raw.client_allowed_sans,
        minVersion: TLS_VERSIONS[raw.min_version],
        maxVersion: TLS_VERSIONS[raw.max_version],
      }
    })
}
export type TlsServerConfig = z.output<ReturnType<typeof tlsSchema>>

/** Whether `pem` holds at least one certificate, and every certificate in it parses. */
function pemCertificates(pem: Buffer): boolean {
  const blocks = pem.toString('latin1').match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g)
  if (!blocks) return false
  try {
    for (const block of blocks) new X509Certificate(block)
    return true
  } catch {
    return false
  }
}

const HttpSchema = z
  .strictObject({
    headers: z.record(z.string(), z.string()).nullish(),
    // We serve HTTP/1.1 only: "false" says exactly that, "true" asks for something we do not do.
    http2: z
      .boolean()
      .refine((v) => !v, {
        error: 'HTTP/2 is not supported by mailprobe_exporter; remove http2 or set it to false',
      })
      .optional(),
  })
  .transform((raw, ctx) => {
    const headers: Record<string, string> = {}
    for (const [name, value] of Object.entries(raw.headers ?? {})) {
      const issue = (message: string) =>
        ctx.issues.push({ code: 'custom', input: value, path: ['headers', name], message })
      if (!Object.hasOwn(EXTRA_HEADERS, name)) {
        issue(
          `HTTP header "${name}" can not be configured (allowed: ${Object.keys(EXTRA_HEADERS).join(', ')})`,
        )
        continue
      }
      if (value === '') continue // blank means unset, as in exporter-toolkit
      const allowed = EXTRA_HEADERS[name]
      if (allowed !== undefined && !allowed.includes(value))
        issue(`${name} must be one of ${allowed.map((v) => `"${v}"`).join(', ')}`)
      else if (!/^[\t\x20-\x7e]*$/.test(value)) issue(`${name}: only printable ASCII is allowed`)
      else headers[name] = value
    }
    return headers
  })

const UsersSchema = z.record(z.string(), z.string()).transform((raw, ctx) => {
  const users = new Map<string, Secret>()
  for (const [name, hash] of Object.entries(raw)) {
    const issue = (message: string) => ctx.issues.push({ code: 'custom', input: name, path: [name], message })
    // The hash itself stays out of the message: it is a secret of sorts.
    if (!BCRYPT_HASH.test(hash))
      issue(
        `not a bcrypt hash (60 characters, like $2y$10$...; make one with: htpasswd -nBC 10 "" | tr -d ':\\n')`,
      )
    else if (name.includes(':'))
      issue('a user name cannot contain ":" (basic auth splits user and password there)')
    else users.set(name, new Secret(hash))
  }
  return users
})

function webConfigSchema(baseDir: string) {
  return z
    .strictObject({
      // A section left empty (all keys commented out) counts as absent, as in exporter-toolkit.
      tls_server_config: tlsSchema(baseDir).nullish(),
      http_server_config: HttpSchema.nullish(),
      basic_auth_users: UsersSchema.nullish(),
      rate_limit: unsupported('rate_limit'),
    })
    .transform((raw) => ({
      tls: raw.tls_server_config ?? undefined,
      headers: raw.http_server_config ?? {},
      users: raw.basic_auth_users ?? new Map<string, Secret>(),
    }))
}

export interface WebConfig {
  file: string
  /** HTTPS when set, else plain HTTP. */
  tls: TlsServerConfig | undefined
  /** Extra response headers (http_server_config.headers). */
  headers: Readonly<Record<string, string>>
  /** User name to bcrypt hash; empty: no authentication. */
  users: ReadonlyMap<string, Secret>
}

export function parseWebConfig(text: string, file: string): WebConfig {
  return { file, ...parseYamlFile(text, file, webConfigSchema(dirname(file))) }
}

/** Reads and checks the web config file, the certificate, key and CA files included; throws ConfigError. */
export function loadWebConfig(file: string): WebConfig {
  return { file, ...loadYamlFile(file, webConfigSchema(dirname(file))) }
}

// ---------------------------------------------------------------- basic auth

export type Compare = (password: string, hash: string) => Promise<boolean>

export interface Authenticator {
  /** Whether the Authorization header carries a configured user and the right password. */
  check(authorization: string | undefined): Promise<boolean>
}

const CACHE_SIZE = 100

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest()
}

/** The user and password of a `Basic` Authorization header, or undefined. */
function parseBasic(header: string | undefined): { user: string; password: string } | undefined {
  const m = /^basic +([A-Za-z0-9+/]+={0,2}) *$/i.exec(header ?? '')
  if (!m?.[1]) return undefined
  const text = Buffer.from(m[1], 'base64').toString('utf8')
  const colon = text.indexOf(':')
  if (colon < 0) return undefined
  return { user: text.slice(0, colon), password: text.slice(colon + 1) }
}

/**
 * Basic auth against bcrypt hashes. Every attempt runs one bcrypt compare (an unknown user against a
 * dummy hash of the highest configured cost) and user names are compared in constant time, so the
 * answer time does not tell which users exist. Successful checks are cached (as exporter-toolkit does)
 * under an HMAC of user, hash and password with a per-process key: a scrape every 15 s would
 * otherwise spend a bcrypt compare each time, and no plain password stays in memory.
 */
export function createAuthenticator(
  users: ReadonlyMap<string, Secret>,
  compare: Compare = (password, hash) => bcrypt.compare(password, hash),
  cacheSize = CACHE_SIZE,
): Authenticator {
  const entries = [...users].map(([name, hash]) => ({ digest: sha256(name), hash: hash.reveal() }))
  const cost = Math.max(4, ...entries.map((e) => Number(e.hash.split('$')[2])))
  const alphabet = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
  const dummy = `$2b$${String(cost).padStart(2, '0')}$${[...randomBytes(53)].map((b) => alphabet[b % 64]).join('')}`
  const hmacKey = randomBytes(32)
  const cache = new Map<string, true>()

  return {
    async check(authorization) {
      const given = parseBasic(authorization)
      if (!given) return false
      const digest = sha256(given.user)
      let hash: string | undefined
      for (const entry of entries) {
        // no early exit: every configured name is compared, each in constant time
        if (timingSafeEqual(entry.digest, digest) && hash === undefined) hash = entry.hash
      }
      const key = createHmac('sha256', hmacKey)
        .update(JSON.stringify([given.user, hash ?? '', given.password]))
        .digest('base64')
      if (hash !== undefined && cache.has(key)) {
        cache.delete(key) // most recently used goes to the end
        cache.set(key, true)
        return true
      }
      const ok = (await compare(given.password, hash ?? dummy)) && hash !== undefined
      if (ok) {
        cache.set(key, true)
        while (cache.size > cacheSize) cache.delete(cache.keys().next().value as string)
      }
      return ok
    },
  }
}

// ---------------------------------------------------------------- client certificates

/** The SAN values of a certificate as exporter-toolkit matches them: DNS, IP, e-mail and URI entries. */
export function subjectAltNames(cert: X509Certificate): string[] {
  const text = cert.subjectAltName ?? ''
  // Node's format: `DNS:a, IP Address:127.0.0.1, email:x@y, URI:u`; values with special characters JSON-quoted.
  const re = /([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)/y
  const values: string[] = []
  while (re.lastIndex < text.length) {
    const m = re.exec(text)
    if (!m) break
    const [, type = '', raw = ''] = m
    const value = raw.startsWith('"') ? (JSON.parse(raw) as string) : raw
    if (['DNS', 'email', 'URI'].includes(type)) values.push(value)
    else if (type === 'IP Address') values.push(canonicalIp(value))
  }
  return values
}

function canonicalIp(ip: string): string {
  return isIPv6(ip) ? new URL(`http://[${ip}]/`).hostname.slice(1, -1) : ip
}

/** Why this TLS connection may not be served, or undefined. Node itself enforces RequireAndVerifyClientCert. */
function clientCertProblem(socket: TLSSocket, config: TlsServerConfig): string | undefined {
  const cert = socket.getPeerX509Certificate()
  switch (config.clientAuth) {
    case 'NoClientCert':
    case 'RequestClientCert':
      break
    case 'RequireAnyClientCert':
      if (!cert) return 'no client certificate'
      break
    case 'VerifyClientCertIfGiven':
      if (cert && !socket.authorized)
        return `client certificate not verified: ${String(socket.authorizationError)}`
      break
    case 'RequireAndVerifyClientCert':
      if (!cert) return 'no client certificate'
      if (!socket.authorized) return `client certificate not verified: ${String(socket.authorizationError)}`
      break
  }
  if (config.allowedSans !== undefined) {
    const allowed = config.allowedSans.map((s) => canonicalIp(s))
    const sans = cert ? subjectAltNames(cert) : []
    if (!sans.some((s) => allowed.includes(s)))
      return `client certificate has none of the SANs in client_allowed_sans (it has: ${sans.join(', ') || 'none'})`
  }
  return undefined
}

// ---------------------------------------------------------------- the server

export interface WebServer {
  server: ReturnType<typeof createHttpServer> | ReturnType<typeof createHttpsServer>
  scheme: 'http' | 'https'
  /**
   * Applies a reloaded web config: users, headers, and the TLS certificate, key, CA and versions.
   * Switching between HTTP and HTTPS or changing client_auth_type needs a restart: then nothing changes
   * and the answer says why.
   */
  update(next: WebConfig): string | undefined
  /** What update(next) would refuse, without changing anything. */
  check(next: WebConfig): string | undefined
}

function secureContextOptions(tls: TlsServerConfig) {
  return {
    cert: tls.cert,
    key: tls.key,
    ...(tls.ca === undefined ? {} : { ca: tls.ca }),
    minVersion: tls.minVersion,
    maxVersion: tls.maxVersion,
  }
}

/**
 * The HTTP or HTTPS server for `app`, with the web config's headers on every answer and, when users are
 * configured, basic auth in front of every path (as exporter-toolkit does: /-/healthy too).
 */
export function createWebServer(
  app: RequestListener,
  initial: WebConfig | undefined,
  logger?: Logger,
): WebServer {
  let config: WebConfig = initial ?? { file: '', tls: undefined, headers: {}, users: new Map() }
  let auth = createAuthenticator(config.users)

  const refuse = (socket: TLSSocket): boolean => {
    if (config.tls === undefined) return false
    const problem = clientCertProblem(socket, config.tls)
    if (problem === undefined) return false
    logger?.debug('refused TLS client', { remote: socket.remoteAddress, err: problem })
    socket.destroy()
    return true
  }

  const handle = async (req: IncomingMessage, res: Parameters<RequestListener>[1]) => {
    // the connection was checked at the handshake; checked again here so no request can slip through
    if (req.socket instanceof TLSSocket && refuse(req.socket)) return
    for (const [name, value] of Object.entries(config.headers)) res.setHeader(name, value)
    if (config.users.size > 0 && !(await auth.check(req.headers.authorization))) {
      res.writeHead(401, {
        'WWW-Authenticate': 'Basic',
        'Content-Type': 'text/plain; charset=utf-8',
        'X-Content-Type-Options': 'nosniff',
      })
      res.end('Unauthorized\n')
      return
    }
    app(req, res)
  }
  const listener: RequestListener = (req, res) => {
    handle(req, res).catch((err: unknown) => {
      logger?.error('web config: request failed', { err })
      if (!res.headersSent) res.writeHead(500).end()
    })
  }

  const tls = config.tls
  let server: WebServer['server']
  if (tls === undefined) {
    server = createHttpServer(listener)
  } else {
    const verify = tls.clientAuth === 'RequireAndVerifyClientCert'
    server = createHttpsServer(
      {
        ...secureContextOptions(tls),
        requestCert: tls.clientAuth !== 'NoClientCert',
        rejectUnauthorized: verify,
      },
      listener,
    )
    server.on('secureConnection', (socket: TLSSocket) => void refuse(socket))
    server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
      logger?.debug('TLS handshake failed', { remote: socket.remoteAddress, err })
    })
  }

  const check = (next: WebConfig): string | undefined => {
    if ((next.tls === undefined) !== (config.tls === undefined))
      return 'switching between HTTP and HTTPS needs a restart; keeping the previous web config'
    if (next.tls !== undefined && next.tls.clientAuth !== config.tls?.clientAuth)
      return 'changing client_auth_type needs a restart; keeping the previous web config'
    return undefined
  }

  return {
    server,
    scheme: tls === undefined ? 'http' : 'https',
    check,
    update(next) {
      const problem = check(next)
      if (problem !== undefined) return problem
      if (next.tls !== undefined && 'setSecureContext' in server)
        server.setSecureContext(secureContextOptions(next.tls))
      config = next
      auth = createAuthenticator(next.users)
      return undefined
    },
  }
}
