// OAuth2 end to end: the exporter fetches tokens from an in-test HTTPS token endpoint and logs in to the
// project's real Dovecot (IMAP, POP3) and Postfix submission (SASL through Dovecot), whose oauth2 passdb
// asks the same endpoint (RFC 7662 introspection) about every token. Short token lifetimes: the probes
// keep working over several of them; a revoked refresh token fails in phase token; a token the endpoint
// revoked while cached is replaced once and the probe succeeds; a wrong password backs off.
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import type { RefusedAttempt } from '../../src/handler.ts'
import { AuthBackoff } from '../../src/limits.ts'
import { ProberStates } from '../../src/probers/index.ts'
import { probe } from '../helpers/probe.ts'
import { mailStack } from '../helpers/stack.ts'
import { tokenEndpoint, type TokenEndpoint } from '../servers/token-endpoint.ts'

const stack = mailStack()
const USER = stack.oauth2.user
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function endpoint(t: TestContext, lifetime = 3600): Promise<TokenEndpoint> {
  return tokenEndpoint(t, {
    clients: { 'mailprobe-monitor': { secret: 'monitor-client-secret', username: USER } },
    port: stack.oauth2.introspectionPort,
    tls: stack.oauth2.tls,
    lifetime,
  })
}

const oauth2 = (e: TokenEndpoint, grant = '') => `
      oauth2:
        token_url: ${e.url}
        client_id: mailprobe-monitor
        client_secret: monitor-client-secret
        scopes: [https://outlook.office365.com/.default]
        tls_config: { ca_file: ${stack.ca} }${grant}`

const modules = (e: TokenEndpoint, grant = '') => ({
  imap: `
prober: imap
allowed_targets: [127.0.0.1]
timeout: 8s
imap:
  tls: implicit
  tls_config: { ca_file: ${stack.ca} }
  auth:
    username: ${USER}${oauth2(e, grant).replace(/\n {6}/g, '\n    ')}`,
  pop3: `
prober: pop3
allowed_targets: [127.0.0.1]
timeout: 8s
pop3:
  tls: implicit
  tls_config: { ca_file: ${stack.ca} }
  auth:
    username: ${USER}${oauth2(e, grant).replace(/\n {6}/g, '\n    ')}`,
  smtp: `
prober: smtp
allowed_targets: [127.0.0.1]
timeout: 8s
smtp:
  tls: starttls
  tls_config: { ca_file: ${stack.ca} }
  auth:
    username: ${USER}${oauth2(e, grant).replace(/\n {6}/g, '\n    ')}`,
})

const targets = {
  imap: `127.0.0.1:${stack.ports.imaps}`,
  pop3: `127.0.0.1:${stack.ports.pop3s}`,
  smtp: `127.0.0.1:${stack.ports.submission}`,
}

test('oauth2 (Dovecot, Postfix): client_credentials tokens log in to IMAP, POP3 and submission with OAUTHBEARER', async (t) => {
  const e = await endpoint(t)
  const states = new ProberStates()
  t.after(() => states.close())
  for (const protocol of ['imap', 'pop3', 'smtp'] as const) {
    const r = await probe(modules(e)[protocol], targets[protocol], { states })
    assert.equal(r.value('probe_success'), 1, `${protocol}\n${r.debug}`)
    const used = r.value(`probe_${protocol}_auth_mechanism_used`, { mechanism: 'OAUTHBEARER' })
    assert.equal(used, 1, `${protocol}: the strongest token mechanism`)
    assert.doesNotMatch(r.debug, /monitor-client-secret/)
    for (const token of e.issued)
      assert.ok(!r.debug.includes(token), `${protocol}: no access token in the output`)
  }
  assert.equal(e.count('client_credentials'), 1, 'one token for the three probes')
  assert.ok(e.requests.filter((r) => r.path === '/introspect').length >= 3, 'Dovecot asked about it')
})

test('oauth2 (Dovecot, Postfix): 1-second tokens: every probe over several lifetimes succeeds', async (t) => {
  const e = await endpoint(t, 1)
  const states = new ProberStates()
  t.after(() => states.close())
  for (let i = 0; i < 6; i++) {
    for (const protocol of ['imap', 'smtp'] as const) {
      const r = await probe(modules(e)[protocol], targets[protocol], { states })
      assert.equal(r.value('probe_success'), 1, `round ${i} ${protocol}\n${r.debug}`)
    }
    await sleep(500)
  }
  const fetches = e.count('client_credentials')
  assert.ok(fetches >= 3 && fetches <= 8, `${fetches} fetches for about 3.5 s of 1 s tokens`)
})

test('oauth2 (Dovecot): a cached token revoked at the endpoint is replaced once and the probe succeeds', async (t) => {
  const e = await endpoint(t)
  const states = new ProberStates()
  t.after(() => states.close())
  const first = await probe(modules(e).imap, targets.imap, { states })
  assert.equal(first.value('probe_success'), 1, first.debug)
  for (const token of e.issued) e.revoke(token)
  const r = await probe(modules(e).imap, targets.imap, { states })
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.match(r.debug, /the server refused the cached access token; trying once more with a new one/)
  assert.equal(e.count('client_credentials'), 2)
})

test('oauth2 (Dovecot): refresh_token grant works; a revoked refresh token fails in phase token, before any login', async (t) => {
  const e = await endpoint(t)
  const refresh = e.issueRefreshToken(USER)
  const grant = `\n        grant: refresh_token\n        refresh_token: ${refresh}`
  const ok = await probe(modules(e, grant).imap, targets.imap)
  assert.equal(ok.value('probe_success'), 1, ok.debug)
  assert.equal(e.count('refresh_token'), 1)

  e.revoke(refresh)
  const introspections = e.requests.filter((r) => r.path === '/introspect').length
  const revoked = await probe(modules(e, grant).imap, targets.imap)
  assert.equal(revoked.value('probe_success'), 0)
  assert.equal(revoked.failedPhase, 'token')
  assert.match(revoked.debug, /invalid_grant/)
  assert.doesNotMatch(revoked.debug, new RegExp(refresh))
  assert.equal(revoked.value('probe_imap_duration_seconds', { phase: 'connect' }), 0, 'no connection made')
  assert.equal(e.requests.filter((r) => r.path === '/introspect').length, introspections)
})

test('oauth2 (Dovecot): a refresh_token module with rotation works over several 1-second token lifetimes', async (t) => {
  const e = await endpoint(t, 1)
  e.rotate = true
  const refresh = e.issueRefreshToken(USER)
  const stateFile = join(mkdtempSync(join(tmpdir(), 'mailprobe-oauth2-')), 'refresh.json')
  const grant = `\n        grant: refresh_token\n        refresh_token: ${refresh}\n        state_file: ${stateFile}`
  const states = new ProberStates()
  t.after(() => states.close())
  for (let i = 0; i < 6; i++) {
    const r = await probe(modules(e, grant).imap, targets.imap, { states })
    assert.equal(r.value('probe_success'), 1, `round ${i}\n${r.debug}`)
    await sleep(500)
  }
  const fetches = e.count('refresh_token')
  assert.ok(fetches >= 3, `${fetches} refreshes for about 3.5 s of 1 s tokens`)
  // Each refresh rotated the refresh token: the configured one is long revoked, the kept one works.
  assert.notEqual(
    (JSON.parse(readFileSync(stateFile, 'utf8')) as { refresh_token: string }).refresh_token,
    refresh,
  )
})

test('auth_backoff (Dovecot): a wrong password is tried once per back-off period, not on every probe', async () => {
  const [user] = stack.users.probe
  const wrong = `
prober: imap
allowed_targets: [127.0.0.1]
timeout: 8s
auth_backoff: 2s
imap:
  tls: implicit
  tls_config: { ca_file: ${stack.ca} }
  auth: { username: ${user}, password: not-the-password }`
  const backoff = new AuthBackoff<RefusedAttempt>()
  const first = await probe(wrong, targets.imap, { backoff })
  assert.equal(first.failedPhase, 'auth', first.debug)
  assert.equal(first.value('probe_auth_backoff'), 0)
  const again = await probe(wrong, targets.imap, { backoff })
  assert.equal(again.value('probe_auth_backoff'), 1, again.debug)
  assert.equal(again.failedPhase, 'auth')
  assert.ok(again.seconds < 0.05, `answered without a login (${again.seconds}s)`)
  assert.match(again.debug, /not logging in again: the last login was refused/)
  await sleep(2100)
  const later = await probe(wrong, targets.imap, { backoff })
  assert.equal(later.value('probe_auth_backoff'), 0, 'the period is over: logged in (and refused) again')
  assert.match(later.debug, /AUTHENTICATIONFAILED|Authentication failed/i)
})
