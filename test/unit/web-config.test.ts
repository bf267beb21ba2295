// --web.config.file: basic auth, HTTPS with client certificates and TLS versions against the real exporter
// (Node's https and curl as clients), the error messages of bad web configs, the auth cache, and reloads.
import assert from 'node:assert/strict'
import { execFile, spawnSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { request as httpRequest, type IncomingHttpHeaders, type RequestListener } from 'node:http'
import { request as httpsRequest, type RequestOptions } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { TLSSocket } from 'node:tls'
import bcrypt from 'bcryptjs'
import { ROOT } from '../helpers/dashboards.ts'
import { startExporter } from '../helpers/prometheus.ts'
import { certs, selfSignedCa, signedLeaf } from '../servers/certs.ts'
import {
  createAuthenticator,
  createWebServer,
  loadWebConfig,
  parseWebConfig,
  subjectAltNames,
  type WebConfig,
} from '../../src/web-config.ts'
import { Secret } from '../../src/secret.ts'

const MAIN_CONFIG = 'modules:\n  one:\n    prober: smtp\n'
// cost 4: the lowest bcrypt allows, so the tests stay fast
const ALICE_HASH = bcrypt.hashSync('s3cret', 4)

// ---------------------------------------------------------------- certificates

interface Clients {
  /** Signed by the test CA (certs()), for client authentication; SANs: DNS, IP (::1), e-mail, URI. */
  good: { certFile: string; keyFile: string }
  /** Signed by another CA. */
  stranger: { certFile: string; keyFile: string }
}

let clientsCache: Clients | undefined
function clients(): Clients {
  if (clientsCache) return clientsCache
  const set = certs()
  const dir = mkdtempSync(join(tmpdir(), 'mailprobe-webcerts-'))
  const other = selfSignedCa(dir, 'other-ca', 'other CA')
  clientsCache = {
    good: signedLeaf(dir, 'client', {
      caCert: set.caFile,
      caKey: join(set.dir, 'ca.key'),
      usage: 'clientAuth',
      san: 'DNS:client.example,IP:::1,email:monitor@example.com,URI:spiffe://mailprobe/prometheus',
    }),
    stranger: signedLeaf(dir, 'stranger', {
      caCert: other.certFile,
      caKey: other.keyFile,
      usage: 'clientAuth',
      san: 'DNS:client.example',
    }),
  }
  return clientsCache
}

// ---------------------------------------------------------------- clients

interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: string
  socket: TLSSocket | undefined
}

/** One request on a fresh connection (no agent: each test decides its own certificate). */
function get(url: string, options: RequestOptions & { user?: string } = {}): Promise<Answer> {
  const { user, ...rest } = options
  const headers = {
    ...(user === undefined ? {} : { authorization: `Basic ${Buffer.from(user).toString('base64')}` }),
  }
  const send = url.startsWith('https:') ? httpsRequest : httpRequest
  return new Promise((resolve, reject) => {
    const req = send(url, { agent: false, timeout: 5000, ...rest, headers }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => (body += chunk))
      res.on('end', () => {
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body,
          socket: res.socket instanceof TLSSocket ? res.socket : undefined,
        })
      })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.on('error', reject)
    req.end()
  })
}

/** curl's exit code and the HTTP status it printed. */
function curl(args: string[]): Promise<{ code: number; status: string }> {
  return new Promise((resolve) => {
    execFile(
      'curl',
      ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', ...args],
      (err, stdout) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1
        resolve({ code, status: stdout })
      },
    )
  })
}

function tmp(prefix: string) {
  return mkdtempSync(join(tmpdir(), `mailprobe-web-${prefix}-`))
}

/** Writes the main config and a web config into a fresh directory; returns the two paths. */
function files(webConfig: string) {
  const dir = tmp('files')
  writeFileSync(join(dir, 'config.yml'), MAIN_CONFIG)
  writeFileSync(join(dir, 'web.yml'), webConfig)
  return { dir, config: join(dir, 'config.yml'), web: join(dir, 'web.yml') }
}

// ---------------------------------------------------------------- the exporter with basic auth

test('web config: basic auth guards every endpoint; right password 200, wrong, unknown or none 401', async (t) => {
  const f = files(
    `basic_auth_users:\n  alice: ${ALICE_HASH}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n`,
  )
  const daemon = await startExporter(f.config, [`--web.config.file=${f.web}`], {
    ready: async (url) => (await get(`${url}/-/healthy`, { user: 'alice:s3cret' })).status === 200,
  })
  t.after(() => daemon.stop())
  const base = daemon.url

  const ok = await get(`${base}/metrics`, { user: 'alice:s3cret' })
  assert.equal(ok.status, 200)
  assert.match(ok.body, /mailprobe_exporter_build_info/)
  assert.equal(ok.headers['x-frame-options'], 'deny', 'the configured header is on every answer')

  for (const [what, user] of [
    ['wrong password', 'alice:wrong'],
    ['unknown user', 'bob:s3cret'],
    ['no credentials', undefined],
    ['empty password', 'alice:'],
  ] as const) {
    const res = await get(`${base}/metrics`, user === undefined ? {} : { user })
    assert.equal(res.status, 401, what)
    assert.equal(res.headers['www-authenticate'], 'Basic', what)
    assert.equal(res.body, 'Unauthorized\n', what)
    assert.equal(res.headers['x-frame-options'], 'deny', `${what}: headers on a 401 too`)
  }

  for (const path of ['/config', '/probe?module=one&target=127.0.0.1:1', '/', '/-/healthy', '/-/ready']) {
    assert.equal((await get(`${base}${path}`)).status, 401, `${path} without auth`)
  }
  const config = await get(`${base}/config`, { user: 'alice:s3cret' })
  assert.equal(config.status, 200)
  assert.match(config.body, /one:/)

  assert.equal((await get(`${base}/-/reload`, { method: 'POST' })).status, 401, 'reload without auth')
  assert.equal((await get(`${base}/-/reload`, { method: 'POST', user: 'alice:s3cret' })).status, 200)

  assert.deepEqual(await curl(['--user', 'alice:s3cret', `${base}/metrics`]), { code: 0, status: '200' })
  assert.deepEqual(await curl(['--user', 'alice:nope', `${base}/metrics`]), { code: 0, status: '401' })
  assert.deepEqual(await curl([`${base}/metrics`]), { code: 0, status: '401' })
  assert.deepEqual(await curl(['--user', 'alice:s3cret', '-X', 'POST', `${base}/-/reload`]), {
    code: 0,
    status: '200',
  })
})

// ---------------------------------------------------------------- the exporter with HTTPS

test('web config: HTTPS with RequireAndVerifyClientCert and min_version TLS13 refuses the wrong clients', async (t) => {
  const set = certs()
  const c = clients()
  const f = files(
    [
      'tls_server_config:',
      '  cert_file: server.crt', // relative to the web config file, as in exporter-toolkit
      '  key_file: server.key',
      '  client_auth_type: RequireAndVerifyClientCert',
      `  client_ca_file: ${set.caFile}`,
      '  min_version: TLS13',
      '',
    ].join('\n'),
  )
  writeFileSync(join(f.dir, 'server.crt'), set.good.cert)
  writeFileSync(join(f.dir, 'server.key'), set.good.key)
  const withCert = (cert: { certFile: string; keyFile: string }) => ({
    ca: set.ca,
    cert: readFileSync(cert.certFile),
    key: readFileSync(cert.keyFile),
  })
  const daemon = await startExporter(f.config, [`--web.config.file=${f.web}`], {
    scheme: 'https',
    ready: async (url) => (await get(`${url}/-/healthy`, withCert(c.good))).status === 200,
  })
  t.after(() => daemon.stop())
  const base = daemon.url
  assert.match(base, /^https:/)

  const ok = await get(`${base}/metrics`, withCert(c.good))
  assert.equal(ok.status, 200)
  assert.equal(ok.socket?.getProtocol(), 'TLSv1.3')

  await assert.rejects(get(`${base}/metrics`, { ca: set.ca }), 'a client without a certificate')
  await assert.rejects(get(`${base}/metrics`, withCert(c.stranger)), 'a certificate from another CA')
  await assert.rejects(
    get(`${base}/metrics`, { ...withCert(c.good), maxVersion: 'TLSv1.2' }),
    'a TLS 1.2-only client (min_version TLS13)',
  )
  await assert.rejects(get(base.replace('https:', 'http:') + '/metrics'), 'plain HTTP on the TLS port')

  const cacert = ['--cacert', set.caFile]
  const cert = ['--cert', c.good.certFile, '--key', c.good.keyFile]
  assert.deepEqual(await curl([...cacert, ...cert, `${base}/metrics`]), { code: 0, status: '200' })
  assert.notEqual((await curl([...cacert, `${base}/metrics`])).code, 0, 'curl without a client certificate')
  assert.notEqual(
    (await curl([...cacert, '--cert', c.stranger.certFile, '--key', c.stranger.keyFile, `${base}/metrics`]))
      .code,
    0,
    'curl with a certificate from another CA',
  )
  assert.notEqual(
    (await curl([...cacert, ...cert, '--tls-max', '1.2', `${base}/metrics`])).code,
    0,
    'curl limited to TLS 1.2',
  )
  assert.notEqual(
    (await curl([base.replace('https:', 'http:') + '/metrics'])).code,
    0,
    'curl with plain HTTP on the TLS port',
  )
})

test('web config: a bad or unreadable web config makes the exporter exit 1 with the message', () => {
  const f = files('tls_server_config:\n  bogus: 1\n')
  const run = (web: string) =>
    spawnSync(
      process.execPath,
      ['--import', 'tsx', 'src/main.ts', `--config.file=${f.config}`, `--web.config.file=${web}`],
      { cwd: ROOT, encoding: 'utf8', timeout: 20_000 },
    )
  const bad = run(f.web)
  assert.equal(bad.status, 1, bad.stderr)
  assert.match(bad.stderr, new RegExp(`${escape(f.web)}:2:3: tls_server_config.bogus: unknown key "bogus"`))
  const missing = run(join(f.dir, 'nope.yml'))
  assert.equal(missing.status, 1)
  assert.match(missing.stderr, /nope\.yml: cannot read: ENOENT/)
})

function escape(text: string) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

// ---------------------------------------------------------------- config errors

test('web config: each bad file is refused with file:line:col, key path and a plain message', () => {
  const set = certs()
  const dir = tmp('bad')
  writeFileSync(join(dir, 'server.crt'), set.good.cert)
  writeFileSync(join(dir, 'server.key'), set.good.key)
  writeFileSync(join(dir, 'other.key'), set.selfSigned.key)
  copyFileSync(set.caFile, join(dir, 'ca.crt'))
  const TLS = 'tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n'
  const cases: [name: string, yaml: string, problems: string[]][] = [
    [
      'unknown key',
      'basic_auth_user:\n  alice: x\n',
      ['1:1: basic_auth_user: unknown key "basic_auth_user"'],
    ],
    [
      'unsupported toolkit key',
      `${TLS}  cipher_suites: [TLS_AES_128_GCM_SHA256]\n`,
      [
        '4:18: tls_server_config.cipher_suites: "cipher_suites" (an exporter-toolkit setting) is not supported by mailprobe_exporter (Node\'s default cipher list is used); remove it',
      ],
    ],
    [
      'unsupported top-level toolkit key',
      'rate_limit:\n  interval: 1s\n  burst: 5\n',
      [
        '2:3: rate_limit: "rate_limit" (an exporter-toolkit setting) is not supported by mailprobe_exporter; remove it',
      ],
    ],
    [
      'http2',
      'http_server_config:\n  http2: true\n',
      [
        '2:10: http_server_config.http2: HTTP/2 is not supported by mailprobe_exporter; remove http2 or set it to false',
      ],
    ],
    [
      'missing key_file',
      'tls_server_config:\n  cert_file: server.crt\n',
      ['2:3: tls_server_config.key_file: key_file is required in tls_server_config'],
    ],
    [
      'unreadable cert file',
      'tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n',
      [`2:14: tls_server_config.cert_file: cannot read ${join(dir, 'missing.crt')}: ENOENT`],
    ],
    [
      'key that does not belong to the certificate',
      'tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n',
      [
        '2:14: tls_server_config.cert_file: cert_file and key_file are not a usable certificate and key: error:05800074:x509 certificate routines::key values mismatch',
      ],
    ],
    [
      'bad bcrypt hash',
      'basic_auth_users:\n  alice: $2y$10$tooshort\n',
      [
        `2:10: basic_auth_users.alice: not a bcrypt hash (60 characters, like $2y$10$...; make one with: htpasswd -nBC 10 "" | tr -d ':\\n')`,
      ],
    ],
    [
      'verify mode without a CA',
      `${TLS}  client_auth_type: RequireAndVerifyClientCert\n`,
      [
        '4:21: tls_server_config.client_auth_type: RequireAndVerifyClientCert needs client_ca_file (the CA that signs client certificates)',
      ],
    ],
    [
      'client CA without client auth',
      `${TLS}  client_ca_file: ca.crt\n`,
      ['4:19: tls_server_config.client_ca_file: client_ca_file is set, but client_auth_type is NoClientCert'],
    ],
    [
      'client CA file that holds no certificate',
      `${TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: server.key\n`,
      ['5:19: tls_server_config.client_ca_file: no PEM certificate in client_ca_file'],
    ],
    [
      'allowed SANs with a mode that may have no certificate',
      `${TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n  client_allowed_sans: [a.example]\n`,
      [
        '6:24: tls_server_config.client_allowed_sans: client_allowed_sans needs client_auth_type RequireAnyClientCert or RequireAndVerifyClientCert',
      ],
    ],
    [
      'unknown client_auth_type',
      `${TLS}  client_auth_type: RequireClientCertPlease\n`,
      [
        '4:21: tls_server_config.client_auth_type: Invalid option: expected one of "NoClientCert"|"RequestClientCert"|"RequireAnyClientCert"|"VerifyClientCertIfGiven"|"RequireAndVerifyClientCert"',
      ],
    ],
    [
      'min_version above max_version',
      `${TLS}  min_version: TLS13\n  max_version: TLS12\n`,
      ['4:16: tls_server_config.min_version: min_version is above max_version'],
    ],
    [
      'header that cannot be configured',
      'http_server_config:\n  headers:\n    Server: nginx\n',
      [
        '3:13: http_server_config.headers.Server: HTTP header "Server" can not be configured (allowed: Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection, Content-Security-Policy)',
      ],
    ],
    [
      'header value outside its list',
      'http_server_config:\n  headers:\n    X-Frame-Options: allow\n',
      [
        '3:22: http_server_config.headers.X-Frame-Options: X-Frame-Options must be one of "deny", "sameorigin"',
      ],
    ],
    [
      'user name with a colon',
      `basic_auth_users:\n  "a:b": ${ALICE_HASH}\n`,
      [
        '2:10: basic_auth_users."a:b": a user name cannot contain ":" (basic auth splits user and password there)',
      ],
    ],
  ]
  for (const [name, yaml, problems] of cases) {
    const file = join(dir, `${name.replaceAll(' ', '-')}.yml`)
    writeFileSync(file, yaml)
    const err = catchError(() => loadWebConfig(file))
    assert.ok(err, `${name}: accepted`)
    assert.equal(
      err.message,
      `${file}: invalid config\n  ${problems.map((p) => `${file}:${p}`).join('\n  ')}`,
      name,
    )
  }
  const hashErr = catchError(() =>
    parseWebConfig('basic_auth_users:\n  alice: secret-looking-value\n', 'w.yml'),
  )
  assert.ok(hashErr && !hashErr.message.includes('secret-looking-value'), 'the bad hash is not repeated')
})

function catchError(f: () => unknown): Error | undefined {
  try {
    f()
    return undefined
  } catch (err) {
    return err as Error
  }
}

test('web config: defaults and accepted forms (empty sections, $2y$ hashes from htpasswd, http2: false)', () => {
  const set = certs()
  const dir = tmp('good')
  writeFileSync(join(dir, 'server.crt'), set.good.cert)
  writeFileSync(join(dir, 'server.key'), set.good.key)
  const file = join(dir, 'web.yml')
  // a $2y$ hash as htpasswd -B writes it, for the password "s3cret"
  const y = ALICE_HASH.replace(/^\$2b\$/, '$2y$')
  writeFileSync(
    file,
    `tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nhttp_server_config:\n  http2: false\n  headers:\n    X-XSS-Protection: ""\nbasic_auth_users:\n  alice: ${y}\n`,
  )
  const config = loadWebConfig(file)
  assert.equal(config.tls?.clientAuth, 'NoClientCert')
  assert.equal(config.tls.minVersion, 'TLSv1.2', "exporter-toolkit's default")
  assert.equal(config.tls.maxVersion, 'TLSv1.3')
  assert.deepEqual(config.headers, {}, 'a blank header is unset')
  assert.equal(config.users.get('alice')?.toString(), '<secret>')
  assert.equal(
    bcrypt.compareSync('s3cret', config.users.get('alice')?.reveal() ?? ''),
    true,
    '$2y$ hashes work',
  )

  const empty = parseWebConfig('tls_server_config:\nbasic_auth_users:\n', 'w.yml')
  assert.equal(empty.tls, undefined, 'an empty section is no section')
  assert.equal(empty.users.size, 0)
})

// ---------------------------------------------------------------- the authenticator

function header(user: string, password: string) {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
}

test('web config: every attempt runs one bcrypt compare; unknown users against a dummy of the same cost', async () => {
  const calls: string[] = []
  const auth = createAuthenticator(new Map([['alice', new Secret(ALICE_HASH)]]), async (password, hash) => {
    calls.push(hash)
    return bcrypt.compare(password, hash)
  })
  assert.equal(await auth.check(header('mallory', 's3cret')), false)
  assert.equal(calls.length, 1, 'an unknown user still costs a compare')
  assert.notEqual(calls[0], ALICE_HASH)
  assert.match(calls[0] ?? '', /^\$2b\$04\$[./A-Za-z0-9]{53}$/, 'the dummy has the cost of the real hashes')
  assert.equal(await auth.check(header('alice', 'wrong')), false)
  assert.equal(calls.length, 2)
  assert.equal(await auth.check(header('alice', 's3cret')), true)
  assert.equal(calls.length, 3)
  // a malformed header is refused without looking at users
  for (const bad of [
    undefined,
    'Bearer abc',
    'Basic !!!',
    `Basic ${Buffer.from('nocolon').toString('base64')}`,
  ])
    assert.equal(await auth.check(bad), false, String(bad))
})

test('web config: successful logins are cached (bounded); failures never are', async () => {
  let compares = 0
  const auth = createAuthenticator(
    new Map([['alice', new Secret(ALICE_HASH)]]),
    async (password, hash) => {
      compares++
      return bcrypt.compare(password, hash)
    },
    3,
  )
  assert.equal(await auth.check(header('alice', 's3cret')), true)
  assert.equal(await auth.check(header('alice', 's3cret')), true)
  assert.equal(compares, 1, 'the second login came from the cache')
  await auth.check(header('alice', 'wrong'))
  await auth.check(header('alice', 'wrong'))
  assert.equal(compares, 3, 'a wrong password is checked every time')
  assert.equal(await auth.check(header('bob', 's3cret')), false, 'the cache does not let another user in')

  // bounded: with a compare that accepts anything, four passwords push the first one out of a cache of three
  let accepted = 0
  const lenient = createAuthenticator(
    new Map([['alice', new Secret(ALICE_HASH)]]),
    () => {
      accepted++
      return Promise.resolve(true)
    },
    3,
  )
  for (const p of ['p1', 'p2', 'p3', 'p4']) await lenient.check(header('alice', p))
  assert.equal(accepted, 4)
  await lenient.check(header('alice', 'p4'))
  assert.equal(accepted, 4, 'p4 is cached')
  await lenient.check(header('alice', 'p1'))
  assert.equal(accepted, 5, 'p1 was evicted')
})

// ---------------------------------------------------------------- client auth modes, in process

const OK: RequestListener = (_req, res) => res.end('ok\n')

async function serve(t: TestContext, config: WebConfig | undefined) {
  const web = createWebServer(OK, config)
  await new Promise<void>((resolve) => web.server.listen(0, '127.0.0.1', resolve))
  t.after(() => {
    web.server.close()
    web.server.closeAllConnections()
  })
  return { web, url: `${web.scheme}://127.0.0.1:${(web.server.address() as AddressInfo).port}` }
}

function tlsConfig(extra: string): WebConfig {
  const set = certs()
  const dir = tmp('mode')
  writeFileSync(join(dir, 'server.crt'), set.good.cert)
  writeFileSync(join(dir, 'server.key'), set.good.key)
  const file = join(dir, 'web.yml')
  writeFileSync(file, `tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n${extra}`)
  return loadWebConfig(file)
}

async function outcome(
  url: string,
  cert?: { certFile: string; keyFile: string },
): Promise<number | 'refused'> {
  const options = {
    ca: certs().ca,
    ...(cert === undefined ? {} : { cert: readFileSync(cert.certFile), key: readFileSync(cert.keyFile) }),
  }
  return get(`${url}/`, options).then(
    (res) => res.status,
    () => 'refused' as const,
  )
}

test('web config: each client_auth_type accepts and refuses the clients exporter-toolkit does', async (t) => {
  const c = clients()
  const ca = `  client_ca_file: ${certs().caFile}\n`
  const table: [
    mode: string,
    none: number | 'refused',
    good: number | 'refused',
    stranger: number | 'refused',
  ][] = [
    ['NoClientCert', 200, 200, 200],
    ['RequestClientCert', 200, 200, 200],
    ['RequireAnyClientCert', 'refused', 200, 200],
    ['VerifyClientCertIfGiven', 200, 200, 'refused'],
    ['RequireAndVerifyClientCert', 'refused', 200, 'refused'],
  ]
  for (const [mode, none, good, stranger] of table) {
    const { url } = await serve(
      t,
      tlsConfig(
        mode === 'NoClientCert' ? '' : `  client_auth_type: ${mode}\n${mode.includes('Verify') ? ca : ''}`,
      ),
    )
    assert.deepEqual(
      [await outcome(url), await outcome(url, c.good), await outcome(url, c.stranger)],
      [none, good, stranger],
      `${mode}: no certificate, one from the CA, one from another CA`,
    )
  }
})

test('web config: client_allowed_sans lets in only certificates with one of the names', async (t) => {
  const c = clients()
  const base = `  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ${certs().caFile}\n`
  const allowed = await serve(t, tlsConfig(`${base}  client_allowed_sans: [other.example, client.example]\n`))
  assert.equal(await outcome(allowed.url, c.good), 200)
  assert.deepEqual(subjectAltNames(new X509Certificate(readFileSync(c.good.certFile))), [
    'client.example',
    '::1',
    'monitor@example.com',
    'spiffe://mailprobe/prometheus',
  ])
  for (const san of ['"0:0:0:0:0:0:0:1"', 'monitor@example.com', 'spiffe://mailprobe/prometheus']) {
    const { url } = await serve(t, tlsConfig(`${base}  client_allowed_sans: [${san}]\n`))
    assert.equal(await outcome(url, c.good), 200, san)
  }
  const denied = await serve(t, tlsConfig(`${base}  client_allowed_sans: [other.example]\n`))
  assert.equal(await outcome(denied.url, c.good), 'refused')
  // RequireAnyClientCert checks names only: a certificate from another CA with the name passes, as in the toolkit
  const any = await serve(
    t,
    tlsConfig('  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: [client.example]\n'),
  )
  assert.equal(await outcome(any.url, c.stranger), 200)
  assert.equal(await outcome(any.url), 'refused')
})

// ---------------------------------------------------------------- reload

test('web config: update() swaps users and certificates, and refuses what needs a restart', async (t) => {
  const pw2 = bcrypt.hashSync('two', 4)
  const plain = await serve(t, parseWebConfig(`basic_auth_users:\n  alice: ${ALICE_HASH}\n`, 'w.yml'))
  assert.equal((await get(`${plain.url}/`, { user: 'alice:s3cret' })).status, 200)
  assert.equal(plain.web.update(parseWebConfig(`basic_auth_users:\n  alice: ${pw2}\n`, 'w.yml')), undefined)
  assert.equal((await get(`${plain.url}/`, { user: 'alice:s3cret' })).status, 401, 'the old password is gone')
  assert.equal((await get(`${plain.url}/`, { user: 'alice:two' })).status, 200)
  assert.match(plain.web.check(tlsConfig('')) ?? '', /HTTP and HTTPS needs a restart/)
  assert.match(plain.web.update(tlsConfig('')) ?? '', /HTTP and HTTPS needs a restart/)
  assert.equal((await get(`${plain.url}/`, { user: 'alice:two' })).status, 200, 'the previous config stays')
  assert.equal(plain.web.update(parseWebConfig('{}\n', 'w.yml')), undefined)
  assert.equal((await get(`${plain.url}/`)).status, 200, 'no users: no auth')

  const set = certs()
  const tls = await serve(t, tlsConfig(''))
  const subject = async () =>
    new X509Certificate(
      (await get(`${tls.url}/`, { rejectUnauthorized: false })).socket!.getPeerCertificate().raw,
    ).subject
  assert.match(await subject(), /CN=good/)
  const dir = tmp('swap')
  writeFileSync(join(dir, 'server.crt'), set.wrongName.cert)
  writeFileSync(join(dir, 'server.key'), set.wrongName.key)
  writeFileSync(join(dir, 'web.yml'), 'tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n')
  const next = loadWebConfig(join(dir, 'web.yml'))
  assert.equal(tls.web.update(next), undefined)
  await assert.rejects(
    get(`${tls.url}/`, { ca: set.ca }),
    'the new certificate is served (not valid for 127.0.0.1)',
  )
  assert.match(await subject(), /CN=wrong/)
  assert.match(
    tls.web.update(tlsConfig(`  client_auth_type: RequireAnyClientCert\n`)) ?? '',
    /client_auth_type needs a restart/,
  )
})

test('web config: the exporter re-reads it on POST /-/reload and SIGHUP; a change that needs a restart is refused', async (t) => {
  const f = files(`basic_auth_users:\n  alice: ${ALICE_HASH}\n`)
  const daemon = await startExporter(f.config, [`--web.config.file=${f.web}`], {
    ready: async (url) => (await get(`${url}/-/healthy`, { user: 'alice:s3cret' })).status === 200,
  })
  t.after(() => daemon.stop())
  const status = async (user: string) => (await get(`${daemon.url}/-/healthy`, { user })).status

  writeFileSync(f.web, `basic_auth_users:\n  bob: ${bcrypt.hashSync('two', 4)}\n`)
  const reloaded = await get(`${daemon.url}/-/reload`, { method: 'POST', user: 'alice:s3cret' })
  assert.equal(reloaded.status, 200, reloaded.body)
  assert.deepEqual([await status('alice:s3cret'), await status('bob:two')], [401, 200], 'the new users rule')

  writeFileSync(f.web, `basic_auth_users:\n  carol: ${bcrypt.hashSync('three', 4)}\n`)
  daemon.kill('SIGHUP')
  for (const until = Date.now() + 10_000; (await status('carol:three')) !== 200;) {
    assert.ok(Date.now() < until, `SIGHUP did not reload the web config:\n${daemon.output()}`)
    await new Promise((r) => setTimeout(r, 50))
  }
  assert.equal(await status('bob:two'), 401)

  const set = certs()
  writeFileSync(join(f.dir, 'server.crt'), set.good.cert)
  writeFileSync(join(f.dir, 'server.key'), set.good.key)
  writeFileSync(f.web, 'tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n')
  const refused = await get(`${daemon.url}/-/reload`, { method: 'POST', user: 'carol:three' })
  assert.equal(refused.status, 500)
  assert.match(refused.body, /web\.yml: switching between HTTP and HTTPS needs a restart/)
  assert.equal(await status('carol:three'), 200, 'the previous web config stays')

  writeFileSync(f.web, 'basic_auth_users:\n  dave: not-a-hash\n')
  const bad = await get(`${daemon.url}/-/reload`, { method: 'POST', user: 'carol:three' })
  assert.equal(bad.status, 500)
  assert.match(bad.body, /web\.yml:2:\d+: basic_auth_users\.dave/, bad.body)
  assert.equal(await status('carol:three'), 200, 'a bad web config changes nothing')
  const metrics = await get(`${daemon.url}/metrics`, { user: 'carol:three' })
  assert.match(metrics.body, /^mailprobe_exporter_config_last_reload_successful 0$/m)
})

test('web config: config/web-config.example.yml loads as it is, and with every option uncommented', () => {
  const text = readFileSync(join(ROOT, 'config/web-config.example.yml'), 'utf8')
  const asIs = parseWebConfig(text, 'web-config.example.yml')
  assert.deepEqual([asIs.tls, asIs.headers, asIs.users.size], [undefined, {}, 0], 'commented out: no effect')

  const set = certs()
  const dir = tmp('example')
  writeFileSync(join(dir, 'mailprobe.crt'), set.good.cert)
  writeFileSync(join(dir, 'mailprobe.key'), set.good.key)
  writeFileSync(join(dir, 'clients-ca.crt'), set.ca)
  const file = join(dir, 'web.yml')
  // option lines are "# key: value"; prose is not "# word:"
  const uncommented = text
    .split('\n')
    .map((line) => (/^# +[\w-]+:(\s|$)/.test(line) ? line.slice(2) : line))
    .join('\n')
    .replace('$2y$10$...', ALICE_HASH)
  writeFileSync(file, uncommented)
  const config = loadWebConfig(file)
  assert.equal(config.tls?.clientAuth, 'RequireAndVerifyClientCert')
  assert.deepEqual(config.tls.allowedSans, ['prometheus.example.com'])
  assert.equal(Object.keys(config.headers).length, 5)
  assert.deepEqual([...config.users.keys()], ['prometheus'])
})
