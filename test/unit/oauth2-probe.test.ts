// OAuth2 in probes: an auth block with oauth2 gets its access token from the token endpoint (phase token),
// keeps it across probes, fetches a new one near expiry and once more when the server refuses a cached
// one; token endpoint errors fail in phase token and say why, with no secret in any output. Against an
// in-process HTTPS token endpoint and an SMTP server that accepts only the endpoint's live tokens.
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { ProberStates } from '../../src/probers/index.ts'
import { probe } from '../helpers/probe.ts'
import { scriptedServer } from '../servers/scripted.ts'
import { tokenEndpoint, type TokenEndpoint } from '../servers/token-endpoint.ts'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** An SMTP server (no TLS) that takes AUTH XOAUTH2 with a token the endpoint says is active for `user`. */
async function tokenSmtp(t: TestContext, endpoint: TokenEndpoint, user: string) {
  const tokens: string[] = []
  const mechanisms: string[] = []
  const server = await scriptedServer(t, async (c) => {
    c.line('220 mx.test ESMTP')
    await c.expect('EHLO')
    c.line('250-mx.test\r\n250 AUTH XOAUTH2 OAUTHBEARER')
    const [, mechanism = '', initial = ''] = (await c.expect('AUTH ')).split(' ')
    mechanisms.push(mechanism)
    const fields = Buffer.from(initial, 'base64').toString('utf8').split('\x01')
    const token = fields.find((f) => f.startsWith('auth=Bearer '))?.slice('auth=Bearer '.length) ?? ''
    tokens.push(token)
    // XOAUTH2: user=U; OAUTHBEARER (RFC 7628): the GS2 header n,a=U,
    const who =
      mechanism === 'XOAUTH2'
        ? fields.find((f) => f.startsWith('user='))?.slice(5)
        : /^n,a=([^,]*),/.exec(fields[0] ?? '')?.[1]
    const info = endpoint.introspect(token)
    if (info.active && info.username === user && who === user) c.line('235 2.7.0 Accepted')
    else {
      c.line(`334 ${Buffer.from('{"status":"401","schemes":"bearer"}').toString('base64')}`)
      await c.expect(mechanism === 'XOAUTH2' ? '' : 'AQ==')
      c.line('535 5.7.8 Username and Password not accepted')
    }
    await c.expect('QUIT')
    c.line('221 bye')
    c.closed()
  })
  return { server, tokens, mechanisms }
}

const module = (endpoint: TokenEndpoint, oauth2: string, user = 'monitor@mx.test') => `
prober: smtp
timeout: 5s
allowed_targets: [127.0.0.1]
smtp:
  tls: none
  auth:
    username: ${user}
    allow_plaintext: true
    oauth2:
      token_url: ${endpoint.url}
      tls_config: { ca_file: ${endpoint.caFile} }
      ${oauth2}`

const clientCredentials = `client_id: probe-client
      client_secret: probe-secret
      scopes: [https://outlook.office365.com/.default]`

test('oauth2: client_credentials: the token is fetched in phase token, kept across probes, and used with OAUTHBEARER or XOAUTH2', async (t) => {
  const endpoint = await tokenEndpoint(t, {
    clients: { 'probe-client': { secret: 'probe-secret', username: 'monitor@mx.test' } },
  })
  const { server, tokens, mechanisms } = await tokenSmtp(t, endpoint, 'monitor@mx.test')
  const states = new ProberStates()
  t.after(() => states.close())
  const target = `127.0.0.1:${server.port}`
  const first = await probe(module(endpoint, clientCredentials), target, { states })
  assert.equal(first.value('probe_success'), 1, first.debug)
  assert.ok((first.value('probe_smtp_duration_seconds', { phase: 'token' }) ?? 0) > 0)
  assert.equal(first.value('probe_smtp_auth_mechanism_used', { mechanism: 'OAUTHBEARER' }), 1, 'the stronger')
  assert.match(first.debug, /msg="access token" from="token endpoint"/)
  const second = await probe(module(endpoint, clientCredentials), target, { states })
  assert.equal(second.value('probe_success'), 1, second.debug)
  assert.match(second.debug, /msg="access token" from=cache/)
  assert.equal(endpoint.count('client_credentials'), 1, 'one fetch for both probes')
  assert.equal(tokens[0], tokens[1])
  const xoauth2 = await probe(
    module(endpoint, clientCredentials).replace(
      'allow_plaintext: true',
      'allow_plaintext: true\n    mechanisms: [XOAUTH2]',
    ),
    target,
    { states },
  )
  assert.equal(xoauth2.value('probe_smtp_auth_mechanism_used', { mechanism: 'XOAUTH2' }), 1, xoauth2.debug)
  assert.deepEqual(mechanisms, ['OAUTHBEARER', 'OAUTHBEARER', 'XOAUTH2'])
  const form = endpoint.requests[0]?.form ?? {}
  assert.equal(form['scope'], 'https://outlook.office365.com/.default')
  // Nothing secret in the debug output: neither the client secret nor the access token.
  for (const r of [first, second]) {
    assert.doesNotMatch(r.debug, /probe-secret/)
    assert.ok(!r.debug.includes(tokens[0] ?? 'none'), 'the access token is not in the debug output')
  }
})

test('oauth2: across several token lifetimes every probe succeeds, with a new token near each expiry', async (t) => {
  const endpoint = await tokenEndpoint(t, {
    clients: { 'probe-client': { secret: 'probe-secret', username: 'monitor@mx.test' } },
    lifetime: 1,
  })
  const { server } = await tokenSmtp(t, endpoint, 'monitor@mx.test')
  const states = new ProberStates()
  t.after(() => states.close())
  for (let i = 0; i < 7; i++) {
    const r = await probe(module(endpoint, clientCredentials), `127.0.0.1:${server.port}`, { states })
    assert.equal(r.value('probe_success'), 1, `probe ${i}\n${r.debug}`)
    await sleep(450)
  }
  // 3.5 s of 1 s tokens: a fetch about every lifetime, never one per probe.
  const fetches = endpoint.count('client_credentials')
  assert.ok(fetches >= 3 && fetches <= 5, `${fetches} fetches`)
})

test('oauth2: a cached token the server refuses (revoked) is replaced once, and the probe succeeds', async (t) => {
  const endpoint = await tokenEndpoint(t, {
    clients: { 'probe-client': { secret: 'probe-secret', username: 'monitor@mx.test' } },
  })
  const { server, tokens } = await tokenSmtp(t, endpoint, 'monitor@mx.test')
  const states = new ProberStates()
  t.after(() => states.close())
  const target = `127.0.0.1:${server.port}`
  assert.equal(
    (await probe(module(endpoint, clientCredentials), target, { states })).value('probe_success'),
    1,
  )
  endpoint.revoke(tokens[0] ?? '')
  const r = await probe(module(endpoint, clientCredentials), target, { states })
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.match(r.debug, /the server refused the cached access token; trying once more with a new one/)
  assert.equal(endpoint.count('client_credentials'), 2)
  assert.equal(server.connections, 3, 'the refused connection and the retry')

  // A freshly fetched token that is refused is not retried: the account is wrong, not the token.
  const fresh = new ProberStates()
  t.after(() => fresh.close())
  const wrong = await probe(module(endpoint, clientCredentials, 'other@mx.test'), target, { states: fresh })
  assert.equal(wrong.failedPhase, 'auth')
  assert.equal(server.connections, 4)
  assert.equal(endpoint.count('client_credentials'), 3)
})

test('oauth2: refresh_token grant: a rotated refresh token is kept in state_file; a revoked one fails in phase token', async (t) => {
  const endpoint = await tokenEndpoint(t, { rotate: true })
  const refresh = endpoint.issueRefreshToken('monitor@mx.test')
  const { server } = await tokenSmtp(t, endpoint, 'monitor@mx.test')
  const stateFile = join(mkdtempSync(join(tmpdir(), 'mailprobe-oauth2-')), 'gmail.json')
  const grant = `client_id: probe-client
      client_secret: probe-secret
      grant: refresh_token
      refresh_token: ${refresh}
      state_file: ${stateFile}`
  const target = `127.0.0.1:${server.port}`
  const states = new ProberStates()
  const r = await probe(module(endpoint, grant), target, { states })
  assert.equal(r.value('probe_success'), 1, r.debug)
  await states.close()
  const kept = JSON.parse(readFileSync(stateFile, 'utf8')) as { refresh_token: string }
  assert.notEqual(kept.refresh_token, refresh, 'rotated, and the new one kept')
  assert.doesNotMatch(r.debug, new RegExp(kept.refresh_token))

  // A new exporter (new states) starts from the kept token: the configured one was revoked by the rotation.
  const again = new ProberStates()
  t.after(() => again.close())
  const restarted = await probe(module(endpoint, grant), target, { states: again })
  assert.equal(restarted.value('probe_success'), 1, restarted.debug)

  const revoked = endpoint.issueRefreshToken('monitor@mx.test')
  endpoint.revoke(revoked)
  const failed = await probe(
    module(endpoint, grant.replace(refresh, revoked).replace(stateFile, `${stateFile}.2`)),
    target,
  )
  assert.equal(failed.value('probe_success'), 0)
  assert.equal(failed.failedPhase, 'token')
  assert.match(failed.debug, /invalid_grant/)
  assert.doesNotMatch(failed.debug, new RegExp(revoked))
})

test('oauth2: a wrong client secret fails in phase token with invalid_client, and the server is not contacted', async (t) => {
  const endpoint = await tokenEndpoint(t)
  const { server } = await tokenSmtp(t, endpoint, 'monitor@mx.test')
  const r = await probe(
    module(endpoint, clientCredentials.replace('probe-secret', 'not-the-secret')),
    `127.0.0.1:${server.port}`,
  )
  assert.equal(r.failedPhase, 'token')
  assert.match(r.debug, /invalid_client/)
  assert.doesNotMatch(r.debug, /not-the-secret/)
  assert.equal(server.connections, 0)
})

test('oauth2: the config takes oauth2 or oauth2_token, not both, and token mechanisms count it', async () => {
  const { parseConfig } = await import('../../src/config.ts')
  const yaml = (auth: string) =>
    `modules:\n  m:\n    prober: smtp\n    target: mx.test:587\n    smtp:\n      auth:\n        username: u\n${auth}`
  const oauth2 = `        oauth2: { token_url: "https://login.example.com/token", client_id: c, client_secret: s }\n`
  assert.throws(
    () => parseConfig(yaml(`${oauth2}        oauth2_token: t\n`), 'c.yml'),
    /modules\.m\.smtp\.auth\.oauth2: give oauth2 \(tokens from a token endpoint\) or oauth2_token \(a fixed token\), not both/,
  )
  const config = parseConfig(yaml(`${oauth2}        mechanisms: [OAUTHBEARER]\n`), 'c.yml')
  const m = config.modules['m']
  assert.ok(m?.prober === 'smtp')
  assert.equal(m.smtp.auth?.oauth2?.client_id, 'c')
  assert.throws(
    () => parseConfig(yaml(oauth2.replace('https://', 'http://')), 'c.yml'),
    /token_url must be an https:\/\/ URL/,
  )
})
