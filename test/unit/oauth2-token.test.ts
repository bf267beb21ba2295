// The OAuth2 token source against an in-process HTTPS token endpoint: caching, refresh ahead of expiry, single
// flight, both grants, rotated refresh tokens kept in a state file, every failure as a TokenError, no secret
// anywhere it could be read; and the oauth2 config section.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { inspect } from 'node:util'
import { DeadlineError } from '../../src/errors.ts'
import { formatJson, formatLogfmt } from '../../src/logger.ts'
import { OAuth2Schema } from '../../src/oauth2/settings.ts'
import { postForm } from '../../src/oauth2/token-request.ts'
import {
  refreshMargin,
  stateFileName,
  TokenError,
  TokenSource,
  type OAuth2Config,
  type TokenSourceOptions,
} from '../../src/oauth2/token-source.ts'
import { recordingLogger } from '../helpers/logger.ts'
import { tokenEndpoint, type TokenEndpoint, type TokenEndpointOptions } from '../servers/token-endpoint.ts'

const START = Date.parse('2030-01-01T00:00:00Z')
const deadline = (ms = 5000) => AbortSignal.timeout(ms)

/** The oauth2 section as a user writes it, through the real schema (ca_file read from disk). */
function configFor(endpoint: TokenEndpoint, extra: Record<string, unknown> = {}): OAuth2Config {
  return OAuth2Schema.parse({
    token_url: endpoint.url,
    client_id: 'probe-client',
    client_secret: 'probe-secret',
    tls_config: { ca_file: endpoint.caFile },
    ...extra,
  })
}

/** An endpoint, a clock the test moves, and a source on both (closed after the test). */
async function setup(
  t: TestContext,
  options: TokenEndpointOptions = {},
  extra: Record<string, unknown> = {},
  sourceOptions: TokenSourceOptions = {},
) {
  const endpoint = await tokenEndpoint(t, options)
  const clock = { now: START }
  const source = new TokenSource(configFor(endpoint, extra), { now: () => clock.now, ...sourceOptions })
  t.after(() => source.close())
  return { endpoint, clock, source }
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise
  } catch (err) {
    assert.ok(err instanceof Error, `rejected with ${String(err)}`)
    return err
  }
  return assert.fail('expected a rejection')
}

async function tokenError(promise: Promise<unknown>, code: string): Promise<TokenError> {
  const err = await rejection(promise)
  assert.ok(err instanceof TokenError, `expected a TokenError, got ${err.name}: ${err.message}`)
  assert.equal(err.code, code, err.message)
  return err
}

function tempDir(t: TestContext) {
  const dir = mkdtempSync(join(tmpdir(), 'mailprobe-oauth2-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

test('oauth2: the first call fetches with client_credentials, later calls get the cached token', async (t) => {
  const { endpoint, clock, source } = await setup(
    t,
    {},
    {
      scopes: ['https://outlook.office365.com/.default', 'offline_access'],
      endpoint_params: { resource: 'mail' },
    },
  )
  const first = await source.token(deadline())
  assert.equal(first.fetched, true)
  assert.ok(first.seconds !== undefined && first.seconds >= 0)
  assert.equal(first.tokenType, 'Bearer')
  assert.equal(first.lifetime, 3600)
  assert.equal(first.expiresAt, START + 3600_000)
  assert.equal(first.accessToken.reveal(), endpoint.issued[0])
  assert.deepEqual(endpoint.introspect(first.accessToken.reveal()).username, 'probe-client')

  clock.now += 60_000
  const second = await source.token(deadline())
  assert.equal(second.fetched, false)
  assert.equal(second.seconds, undefined)
  assert.equal(second.accessToken, first.accessToken)
  assert.equal(endpoint.count(), 1)

  const [request] = endpoint.requests
  assert.equal(request?.method, 'POST')
  assert.equal(request.contentType, 'application/x-www-form-urlencoded')
  assert.equal(request.authorization, undefined, 'the secret goes in the body, not HTTP Basic')
  assert.deepEqual(request.form, {
    grant_type: 'client_credentials',
    client_id: 'probe-client',
    client_secret: 'probe-secret',
    scope: 'https://outlook.office365.com/.default offline_access',
    resource: 'mail',
  })
})

test('oauth2: inside the margin, min(5 min, 10% of the lifetime), the token is refreshed in the background', async (t) => {
  assert.equal(refreshMargin(3600), 300)
  assert.equal(refreshMargin(60), 6)
  const { endpoint, clock, source } = await setup(t)
  const first = await source.token(deadline())

  clock.now = START + 3299_000 // 301 s left: not yet
  assert.equal((await source.token(deadline())).accessToken, first.accessToken)
  await source.idle()
  assert.equal(endpoint.count(), 1)

  clock.now = START + 3301_000 // 299 s left: the caller gets the old token at once, a refresh starts
  const during = await source.token(deadline())
  assert.equal(during.accessToken, first.accessToken)
  assert.equal(during.fetched, false)
  await source.idle()
  assert.equal(endpoint.count(), 2)
  const after = await source.token(deadline())
  assert.notEqual(after.accessToken.reveal(), first.accessToken.reveal())
  assert.equal(after.fetched, false)
  assert.equal(after.expiresAt, START + 3301_000 + 3600_000)

  // A short-lived token: 10% of 60 s.
  endpoint.lifetime = 60
  source.invalidate()
  const short = await source.token(deadline())
  assert.equal(short.lifetime, 60)
  clock.now += 53_900
  await source.token(deadline())
  await source.idle()
  assert.equal(endpoint.count(), 3)
  clock.now += 200
  await source.token(deadline())
  await source.idle()
  assert.equal(endpoint.count(), 4)
})

test('oauth2: an expired token is never handed out: the caller waits for a new one', async (t) => {
  const { endpoint, clock, source } = await setup(t)
  const first = await source.token(deadline())
  endpoint.delayMs = 100
  clock.now = START + 3600_000
  const second = await source.token(deadline())
  assert.equal(second.fetched, true)
  assert.ok(second.seconds !== undefined && second.seconds >= 0.09, `waited ${String(second.seconds)} s`)
  assert.notEqual(second.accessToken.reveal(), first.accessToken.reveal())
  assert.equal(endpoint.count(), 2)
})

test('oauth2: without expires_in a token lasts an hour; expires_in as digits and token_type bearer are taken', async (t) => {
  const { endpoint, clock, source } = await setup(t, { lifetime: null })
  const first = await source.token(deadline())
  assert.equal(first.lifetime, 3600)
  assert.equal(first.expiresAt, START + 3600_000)

  endpoint.fault = {
    kind: 'status',
    status: 200,
    body: JSON.stringify({ access_token: 'eyJ0eXAi.eyJhdWQi.c2ln', token_type: 'bearer', expires_in: '120' }),
  }
  clock.now += 10_000
  source.invalidate()
  const second = await source.token(deadline())
  assert.equal(second.lifetime, 120)
  assert.equal(second.expiresAt, START + 10_000 + 120_000)
  assert.equal(second.accessToken.reveal(), 'eyJ0eXAi.eyJhdWQi.c2ln')
})

test('oauth2: ten concurrent calls share one fetch, and a caller giving up does not cancel it for the others', async (t) => {
  const { endpoint, source } = await setup(t)
  endpoint.delayMs = 200
  const impatient = rejection(source.token(AbortSignal.timeout(30)))
  let answered = false
  const calls = Promise.all(Array.from({ length: 10 }, () => source.token(deadline()))).then((tokens) => {
    answered = true
    return tokens
  })
  const err = await impatient
  assert.ok(err instanceof DeadlineError, `${err.name}: ${err.message}`)
  assert.equal(answered, false, 'the impatient caller stopped at its own deadline, before the answer')
  const tokens = await calls
  assert.equal(endpoint.count(), 1)
  for (const token of tokens) {
    assert.equal(token.accessToken, tokens[0]?.accessToken)
    assert.equal(token.fetched, true)
  }
  assert.equal((await source.token(deadline())).fetched, false)
})

test('oauth2: the refresh_token grant sends the refresh token, with or without a client secret', async (t) => {
  const endpoint = await tokenEndpoint(t, {
    clients: { 'mail-app': { secret: 'app-secret' }, 'public-app': { secret: undefined } },
  })
  const refresh = endpoint.issueRefreshToken('probe@example.com', 'mail-app')
  const source = new TokenSource(
    configFor(endpoint, {
      client_id: 'mail-app',
      client_secret: 'app-secret',
      grant: 'refresh_token',
      refresh_token: refresh,
      scopes: ['https://mail.google.com/'],
    }),
  )
  t.after(() => source.close())
  const token = await source.token(deadline())
  assert.deepEqual(endpoint.requests[0]?.form, {
    grant_type: 'refresh_token',
    client_id: 'mail-app',
    client_secret: 'app-secret',
    scope: 'https://mail.google.com/',
    refresh_token: refresh,
  })
  assert.equal(endpoint.introspect(token.accessToken.reveal()).username, 'probe@example.com')

  const publicRefresh = endpoint.issueRefreshToken('other@example.com', 'public-app')
  const { client_secret: _, ...withoutSecret } = configFor(endpoint, {
    client_id: 'public-app',
    client_secret: undefined,
    grant: 'refresh_token',
    refresh_token: publicRefresh,
  })
  assert.equal(_, undefined)
  const publicSource = new TokenSource(withoutSecret)
  t.after(() => publicSource.close())
  const publicToken = await publicSource.token(deadline())
  assert.equal(endpoint.requests[1]?.form['client_secret'], undefined)
  assert.equal(endpoint.introspect(publicToken.accessToken.reveal()).username, 'other@example.com')
})

test('oauth2: a rotated refresh token is used next, saved (0600, atomically) and preferred by a new source', async (t) => {
  const endpoint = await tokenEndpoint(t, { rotate: true })
  const configured = endpoint.issueRefreshToken('probe@example.com')
  const config = configFor(endpoint, { grant: 'refresh_token', refresh_token: configured })
  const stateFile = join(tempDir(t), 'state', stateFileName(config))
  const { logger, lines } = recordingLogger()
  const first = new TokenSource(config, { stateFile, logger })
  t.after(() => first.close())

  await first.token(deadline())
  const saved = () => JSON.parse(readFileSync(stateFile, 'utf8')) as Record<string, unknown>
  const rotated1 = saved()['refresh_token']
  assert.equal(typeof rotated1, 'string')
  assert.notEqual(rotated1, configured)
  assert.equal(statSync(stateFile).mode & 0o777, 0o600)
  assert.equal(saved()['client_id'], 'probe-client')
  assert.equal(saved()['token_url'], endpoint.url)
  assert.match(String(saved()['configured_refresh_token_sha256']), /^[0-9a-f]{64}$/)
  assert.ok(!readFileSync(stateFile, 'utf8').includes(configured), 'the configured token is only hashed')

  first.invalidate()
  await first.token(deadline())
  assert.equal(endpoint.requests[1]?.form['refresh_token'], rotated1, 'the rotated token is used from memory')
  const rotated2 = saved()['refresh_token']
  assert.notEqual(rotated2, rotated1)
  assert.deepEqual(readdirSync(join(stateFile, '..')), [stateFileName(config)], 'no temp file is left')

  // A restart: the configured token was revoked by the rotation, the saved one works.
  const restarted = new TokenSource(config, { stateFile, logger })
  t.after(() => restarted.close())
  await restarted.token(deadline())
  assert.equal(endpoint.requests[2]?.form['refresh_token'], rotated2)
  assert.ok(lines.some((l) => l.msg.includes('using the rotated refresh token from the state file')))

  // A new configured token (someone consented again) wins over the file; so does another client's file.
  const reconsented = endpoint.issueRefreshToken('probe@example.com')
  const fresh = new TokenSource(configFor(endpoint, { grant: 'refresh_token', refresh_token: reconsented }), {
    stateFile,
    logger,
  })
  t.after(() => fresh.close())
  await fresh.token(deadline())
  assert.equal(endpoint.requests[3]?.form['refresh_token'], reconsented)
  assert.ok(lines.some((l) => l.msg.includes('for another client or an older configured refresh token')))
  // The default file name is one per client and configured refresh token.
  const again = configFor(endpoint, { grant: 'refresh_token', refresh_token: configured })
  assert.equal(stateFileName(again), stateFileName(config))
  assert.notEqual(stateFileName({ ...config, refresh_token: again.client_secret }), stateFileName(config))
  assert.notEqual(stateFileName({ ...config, client_id: 'other' }), stateFileName(config))
})

test('oauth2: a state file that is not JSON is ignored with a warning, and replaced by the next rotation', async (t) => {
  const endpoint = await tokenEndpoint(t, { rotate: true })
  const configured = endpoint.issueRefreshToken('probe@example.com')
  const stateFile = join(tempDir(t), 'oauth2.json')
  writeFileSync(stateFile, '{ not json')
  const { logger, lines } = recordingLogger()
  const source = new TokenSource(configFor(endpoint, { grant: 'refresh_token', refresh_token: configured }), {
    stateFile,
    logger,
  })
  t.after(() => source.close())
  await source.token(deadline())
  assert.equal(endpoint.requests[0]?.form['refresh_token'], configured)
  assert.ok(lines.some((l) => l.level === 'warn' && l.msg.includes('it is not JSON')))
  assert.equal((JSON.parse(readFileSync(stateFile, 'utf8')) as { version: number }).version, 1)
})

test('oauth2: a revoked refresh token is invalid_grant, quoting the endpoint', async (t) => {
  const endpoint = await tokenEndpoint(t)
  const refresh = endpoint.issueRefreshToken('probe@example.com')
  endpoint.revoke(refresh)
  const source = new TokenSource(configFor(endpoint, { grant: 'refresh_token', refresh_token: refresh }))
  t.after(() => source.close())
  const err = await tokenError(source.token(deadline()), 'invalid_grant')
  assert.equal(err.status, 400)
  assert.equal(err.endpointError, '"invalid_grant"')
  assert.match(err.message, /AADSTS70008: The refresh token has expired/)
  assert.ok(err.message.includes(endpoint.url), err.message)
  assert.ok(!err.message.includes(refresh))
})

test('oauth2: a wrong client secret is invalid_client', async (t) => {
  const wrong = `wrong-${randomBytes(8).toString('hex')}`
  const { source } = await setup(t, {}, { client_secret: wrong })
  const err = await tokenError(source.token(deadline()), 'invalid_client')
  assert.equal(err.status, 401)
  assert.match(
    err.message,
    /refused the client_credentials grant: 401 "invalid_client" "client authentication failed"/,
  )
  assert.ok(!err.message.includes(wrong))
})

test('oauth2: a stalled endpoint is a timeout after the source’s own timeout', async (t) => {
  const { endpoint, source } = await setup(t, {}, {}, { timeoutMs: 300 })
  endpoint.fault = { kind: 'stall' }
  const started = performance.now()
  const err = await tokenError(source.token(deadline(5000)), 'timeout')
  const elapsed = performance.now() - started
  assert.ok(elapsed >= 250 && elapsed < 2000, `failed after ${String(Math.round(elapsed))} ms`)
  assert.match(err.message, /did not answer in time/)
  assert.equal(endpoint.count(), 1)
})

test('oauth2: a stalled endpoint never holds a caller past its deadline; close() abandons the fetch', async (t) => {
  const { endpoint, source } = await setup(t) // the source's own timeout: 10 s
  endpoint.fault = { kind: 'stall' }
  const started = performance.now()
  const err = await rejection(source.token(AbortSignal.timeout(200)))
  assert.ok(err instanceof DeadlineError, `${err.name}: ${err.message}`)
  assert.ok(performance.now() - started < 1000)
  const closing = performance.now()
  await source.close()
  assert.ok(performance.now() - closing < 1000, 'the fetch in flight was abandoned')
  await tokenError(source.token(deadline()), 'closed')
})

test('oauth2: an answer over 64 KiB is a bad_response, and it is not read to the end', async (t) => {
  const { endpoint, source } = await setup(t)
  const total = 64 * 1024 * 1024
  endpoint.fault = { kind: 'huge', bytes: total }
  const err = await tokenError(source.token(deadline()), 'bad_response')
  assert.match(err.message, /more than 65536 bytes; the rest was not read/)
  for (let i = 0; i < 100 && endpoint.huge.sent < total && !endpoint.huge.finished; i++)
    await new Promise((resolve) => setTimeout(resolve, 10))
  assert.equal(endpoint.huge.finished, false)
  assert.ok(endpoint.huge.sent < total / 4, `the server got ${String(endpoint.huge.sent)} bytes out`)

  endpoint.fault = { kind: 'huge', bytes: 100_000, declareLength: true }
  await tokenError(source.token(deadline()), 'bad_response')
})

test('oauth2: an answer that is not a usable token is a TokenError that says why', async (t) => {
  const { endpoint, source } = await setup(t)
  const cases: [fault: TokenEndpoint['fault'], code: string, message: RegExp][] = [
    [{ kind: 'garbage' }, 'bad_response', /a body that is not JSON \(text\/html, \d+ bytes\)/],
    [{ kind: 'status', status: 200, body: '[1]' }, 'bad_response', /JSON that is not an object/],
    [{ kind: 'status', status: 200, body: '{"token_type":"Bearer"}' }, 'bad_response', /no access_token/],
    [{ kind: 'status', status: 200, body: '{"access_token":"a b"}' }, 'bad_response', /no access_token/],
    [
      { kind: 'status', status: 200, body: '{"access_token":"x","token_type":"mac"}' },
      'bad_response',
      /"mac", not Bearer/,
    ],
    [
      { kind: 'status', status: 200, body: '{"access_token":"x","expires_in":-5}' },
      'bad_response',
      /expires_in "-5"/,
    ],
    [
      { kind: 'status', status: 200, body: '{"access_token":"x","expires_in":"soon"}' },
      'bad_response',
      /expires_in/,
    ],
    [
      { kind: 'status', status: 200, body: '{"access_token":"x","refresh_token":7}' },
      'bad_response',
      /refresh_token/,
    ],
    [
      { kind: 'status', status: 400, body: '{"error":"invalid_scope"}' },
      'invalid_scope',
      /400 "invalid_scope"$/,
    ],
    [
      { kind: 'status', status: 400, body: '{"error":"unauthorized_client"}' },
      'unauthorized_client',
      /unauthorized/,
    ],
    [
      { kind: 'status', status: 429, body: '{"error":"slow_down","error_description":"later"}' },
      'http_429',
      /429 "slow_down" "later"/,
    ],
    [
      { kind: 'status', status: 503, body: '<h1>down</h1>', contentType: 'text/html' },
      'http_503',
      /status 503 \(text\/html, 13 bytes\)/,
    ],
    [
      { kind: 'status', status: 302, body: '', headers: { location: '/token' } },
      'http_302',
      /status 302 \(redirects are not followed\)/,
    ],
    [
      {
        kind: 'status',
        status: 400,
        body: JSON.stringify({ error: 'invalid_request', error_description: 'a\u001b[31m\r\nlevel=error' }),
      },
      'invalid_request',
      /"a\\u001b\[31m\\r\\nlevel=error"/,
    ],
    [
      {
        kind: 'status',
        status: 400,
        body: JSON.stringify({ error: 'invalid_request', error_description: 'x'.repeat(5000) }),
      },
      'invalid_request',
      /"x{300}\.\.\."$/,
    ],
  ]
  for (const [fault, code, message] of cases) {
    endpoint.fault = fault
    const before = endpoint.count()
    const err = await tokenError(source.token(deadline()), code)
    assert.match(err.message, message)
    assert.ok(err.message.length < 600, 'messages are bounded')
    assert.equal(endpoint.count(), before + 1, 'one request each: no redirect followed, no retry')
  }
})

test('oauth2: after invalidate() or expired(token) the next call fetches; an old token does not drop a new one', async (t) => {
  const { endpoint, source } = await setup(t)
  const first = await source.token(deadline())
  source.invalidate()
  const second = await source.token(deadline())
  assert.equal(second.fetched, true)
  assert.notEqual(second.accessToken.reveal(), first.accessToken.reveal())
  assert.equal(endpoint.count(), 2)

  assert.equal(source.expired(first), false, 'first is not the cached token any more')
  assert.equal((await source.token(deadline())).accessToken, second.accessToken)
  assert.equal(source.expired(second), true)
  const third = await source.token(deadline())
  assert.equal(third.fetched, true)
  assert.equal(endpoint.count(), 3)
})

test('oauth2: a failed background refresh keeps the token until it expires, warns, and waits before retrying', async (t) => {
  const { logger, lines } = recordingLogger()
  const { endpoint, clock, source } = await setup(t, {}, {}, { logger })
  const first = await source.token(deadline())
  endpoint.fault = { kind: 'status', status: 503, body: 'busy', contentType: 'text/plain' }

  clock.now = START + 3400_000
  assert.equal((await source.token(deadline())).accessToken, first.accessToken)
  await source.idle()
  assert.equal(endpoint.count(), 2)
  const warning = lines.find((l) => l.level === 'warn')
  assert.match(warning?.msg ?? '', /refresh failed/)
  assert.match(String(warning?.attrs['err']), /status 503/)

  clock.now += 5_000 // within the 10 s hold: no new request
  assert.equal((await source.token(deadline())).accessToken, first.accessToken)
  await source.idle()
  assert.equal(endpoint.count(), 2)
  clock.now += 6_000
  await source.token(deadline())
  await source.idle()
  assert.equal(endpoint.count(), 3)

  clock.now = START + 3600_000 // expired: the caller waits, and gets the failure
  await tokenError(source.token(deadline()), 'http_503')
})

test('oauth2: the token endpoint’s certificate must verify: against tls_config.ca_file and the right name', async (t) => {
  const endpoint = await tokenEndpoint(t)
  const { tls_config: _, ...systemCas } = configFor(endpoint)
  const untrusted = new TokenSource(systemCas)
  t.after(() => untrusted.close())
  const err = await tokenError(untrusted.token(deadline()), 'tls')
  assert.match(err.message, /TLS with token endpoint https:\/\/127\.0\.0\.1:\d+\/token failed/)

  const wrongName = new TokenSource(
    configFor(endpoint, { tls_config: { ca_file: endpoint.caFile, server_name: 'wrong.example' } }),
  )
  t.after(() => wrongName.close())
  await tokenError(wrongName.token(deadline()), 'tls')
  assert.equal(endpoint.count(), 0, 'nothing was sent to an endpoint that did not verify')
})

test('oauth2: an endpoint that is not there is a network error', async (t) => {
  const endpoint = await tokenEndpoint(t)
  await endpoint.close()
  const source = new TokenSource(configFor(endpoint))
  t.after(() => source.close())
  const err = await tokenError(source.token(deadline()), 'network')
  assert.match(err.message, /cannot reach token endpoint https:\/\/127\.0\.0\.1:\d+\/token: "ECONNREFUSED: /)
})

test('oauth2: no secret appears in messages, log lines, or the JSON and inspect output of sources and tokens', async (t) => {
  const clientSecret = `cs-${randomBytes(12).toString('hex')}`
  const endpoint = await tokenEndpoint(t, {
    clients: { 'probe-client': { secret: clientSecret } },
    rotate: true,
  })
  const configured = endpoint.issueRefreshToken('probe@example.com')
  const config = configFor(endpoint, {
    client_secret: clientSecret,
    grant: 'refresh_token',
    refresh_token: configured,
  })
  const stateFile = join(tempDir(t), stateFileName(config))
  const { logger, lines } = recordingLogger()
  const clock = { now: START }
  const source = new TokenSource(config, { stateFile, logger, now: () => clock.now })
  t.after(() => source.close())

  const token = await source.token(deadline())
  const rotated = (JSON.parse(readFileSync(stateFile, 'utf8')) as { refresh_token: string }).refresh_token
  const secrets = [clientSecret, configured, rotated, token.accessToken.reveal()]

  // A hostile endpoint quotes everything it was sent: first in a background refresh, then to a waiting caller.
  endpoint.fault = { kind: 'echo' }
  clock.now = START + 3500_000
  await source.token(deadline())
  await source.idle()
  source.invalidate()
  const err = await tokenError(source.token(deadline()), 'invalid_client')
  assert.match(err.message, /client_secret=<secret>/, 'the echo arrived, redacted')
  assert.match(err.message, /refresh_token=<secret>/)

  const restarted = new TokenSource(config, { stateFile, logger })
  t.after(() => restarted.close())
  endpoint.fault = undefined
  const restartedToken = await restarted.token(deadline())
  secrets.push(restartedToken.accessToken.reveal())

  assert.ok(
    lines.some((l) => l.level === 'warn'),
    'the background failure was logged',
  )
  const outputs = [
    err.message,
    String(err),
    inspect(err, { depth: Infinity }),
    JSON.stringify(err),
    err.stack ?? '',
    ...lines.flatMap((l) => [
      formatLogfmt(l.level, l.msg, l.attrs),
      formatJson(l.level, l.msg, l.attrs),
      inspect(l),
    ]),
    inspect(source, { depth: Infinity }),
    JSON.stringify(source),
    inspect(restarted),
    JSON.stringify(restarted),
    inspect(token, { depth: Infinity }),
    JSON.stringify(token),
    String(token.accessToken),
    inspect(config, { depth: Infinity }),
    JSON.stringify(config),
  ]
  for (const output of outputs)
    for (const secret of secrets) assert.ok(!output.includes(secret), `a secret in: ${output.slice(0, 300)}`)
  assert.match(JSON.stringify(token), /"accessToken":"<secret>"/)
  assert.match(JSON.stringify(source), /"client_id":"probe-client"/)
})

test('oauth2: the config section uses the settings vocabulary and refuses what cannot work', (t) => {
  const dir = tempDir(t)
  const secretFile = join(dir, 'secret')
  writeFileSync(secretFile, 'from-file\n')
  process.env['MAILPROBE_TEST_OAUTH2_SECRET'] = 'from-env'
  t.after(() => delete process.env['MAILPROBE_TEST_OAUTH2_SECRET'])
  const base = { token_url: 'https://login.example/tenant/oauth2/v2.0/token', client_id: 'abc' }

  const minimal = OAuth2Schema.parse({ ...base, client_secret: 'shh' })
  assert.equal(minimal.grant, 'client_credentials')
  assert.deepEqual(minimal.scopes, [])
  assert.deepEqual(minimal.endpoint_params, {})
  assert.equal(minimal.client_secret?.reveal(), 'shh')
  assert.equal(minimal.tls_config, undefined)
  assert.ok(!JSON.stringify(minimal).includes('shh'))
  assert.equal(
    OAuth2Schema.parse({ ...base, client_secret_file: secretFile }).client_secret?.reveal(),
    'from-file',
  )
  assert.equal(
    OAuth2Schema.parse({
      ...base,
      client_secret_env: 'MAILPROBE_TEST_OAUTH2_SECRET',
    }).client_secret?.reveal(),
    'from-env',
  )
  const refresh = OAuth2Schema.parse({ ...base, grant: 'refresh_token', refresh_token_file: secretFile })
  assert.equal(refresh.refresh_token?.reveal(), 'from-file')
  assert.equal(refresh.client_secret, undefined, 'a public client needs no secret')

  const refused: [input: Record<string, unknown>, path: string, message: RegExp][] = [
    [
      { ...base, token_url: 'http://127.0.0.1/token', client_secret: 's' },
      'token_url',
      /must be an https:\/\/ URL/,
    ],
    [
      { ...base, token_url: 'https://me:hunter2@login.example/', client_secret: 's' },
      'token_url',
      /user name or password$/,
    ],
    [{ ...base, token_url: 'login.example/token', client_secret: 's' }, 'token_url', /is not a URL/],
    [{ ...base, token_url: 'https://login.example/token#x', client_secret: 's' }, 'token_url', /fragment/],
    [
      { ...base, client_secret: 's', client_secret_env: 'X' },
      'client_secret_env',
      /give only one of client_secret, client_secret_env/,
    ],
    [base, 'client_secret', /client_secret, client_secret_file or client_secret_env is required/],
    [
      { ...base, grant: 'refresh_token' },
      'refresh_token',
      /refresh_token, refresh_token_file or refresh_token_env is required/,
    ],
    [
      { ...base, client_secret: 's', refresh_token: 'r' },
      'refresh_token',
      /only used with grant: refresh_token/,
    ],
    [
      { ...base, client_secret: 's', endpoint_params: { scope: 'x' } },
      'endpoint_params.scope',
      /cannot set scope: it comes from scopes/,
    ],
    [{ ...base, client_secret: 's', scopes: ['a b'] }, 'scopes.0', /printable ASCII without spaces/],
    [
      { ...base, client_secret: 's', tls_config: { insecure_skip_verify: true } },
      'tls_config.insecure_skip_verify',
      /must verify/,
    ],
    [
      { ...base, client_secret: 's', tls_config: { ca_file: join(dir, 'missing.pem') } },
      'tls_config.ca_file',
      /cannot read/,
    ],
    [{ ...base, client_secret: 's', grant: 'password' }, 'grant', /client_credentials/],
    [{ ...base, client_secret: 's', audience: 'x' }, '', /audience/],
    [{ ...base, client_id: 'a\nb', client_secret: 's' }, 'client_id', /control characters/],
    [{ ...base, client_secret_file: join(dir, 'nope') }, 'client_secret_file', /cannot read/],
  ]
  for (const [input, path, message] of refused) {
    const result = OAuth2Schema.safeParse(input)
    assert.equal(result.success, false, JSON.stringify(input))
    const issue = result.error.issues.find(
      (i) => message.test(i.message) || (i.code === 'unrecognized_keys' && message.test(i.keys.join())),
    )
    assert.ok(issue, `${JSON.stringify(input)}: ${JSON.stringify(result.error.issues.map((i) => i.message))}`)
    assert.equal(issue.path.join('.'), path)
    assert.ok(!issue.message.includes('hunter2'))
  }
})

test('oauth2: the test endpoint answers RFC 7662 introspection (what Dovecot’s oauth2 passdb asks)', async (t) => {
  const { endpoint, source } = await setup(t)
  const token = (await source.token(deadline())).accessToken.reveal()
  const introspect = async (value: string) => {
    const answer = await postForm({
      url: new URL(endpoint.introspectionUrl),
      form: new URLSearchParams({ token: value }),
      tls: { ca: endpoint.ca, insecure_skip_verify: false },
      signal: deadline(),
      secrets: [],
    })
    assert.equal(answer.status, 200)
    return JSON.parse(answer.body.toString('utf8')) as Record<string, unknown>
  }
  const active = await introspect(token)
  assert.equal(active['active'], true)
  assert.equal(active['username'], 'probe-client')
  assert.equal(active['email'], 'probe-client')
  assert.ok(Math.abs(Number(active['exp']) - (Date.now() / 1000 + 3600)) < 5, String(active['exp']))
  assert.deepEqual(await introspect('at-unknown'), { active: false })
  endpoint.revoke(token)
  assert.deepEqual(endpoint.introspect(token), { active: false })
  assert.deepEqual(await introspect(token), { active: false })
})
