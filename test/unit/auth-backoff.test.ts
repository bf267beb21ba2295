// auth_backoff: after a refused login a module does not log in to that target again for a while; the probes
// meanwhile repeat the failure (probe_auth_backoff 1) without connecting. Other failures never back off.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { RefusedAttempt } from '../../src/handler.ts'
import { AuthBackoff } from '../../src/limits.ts'
import { probe } from '../helpers/probe.ts'
import { scriptedServer } from '../servers/scripted.ts'
import { smtpScript } from '../servers/smtp.ts'
import { tokenEndpoint } from '../servers/token-endpoint.ts'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const smtp = (
  backoff = '',
  auth = '{ username: monitor@mx.test, password: wrong-secret, allow_plaintext: true }',
) => `
prober: smtp
timeout: 3s
allowed_targets: [127.0.0.1]
${backoff}
smtp:
  tls: none
  auth: ${auth}`

test('auth_backoff: a refused login is tried once per back-off period; the probes between repeat it', async (t) => {
  const server = await scriptedServer(
    t,
    smtpScript({ starttls: false, authBeforeTls: true, auth: '535 5.7.8 Authentication failed' }),
  )
  const backoff = new AuthBackoff<RefusedAttempt>()
  const target = `127.0.0.1:${server.port}`
  const first = await probe(smtp('auth_backoff: 1s'), target, { backoff })
  assert.equal(first.failedPhase, 'auth')
  assert.equal(first.value('probe_auth_backoff'), 0)
  assert.equal(server.connections, 1)

  const again = await probe(smtp('auth_backoff: 1s'), target, { backoff })
  assert.equal(server.connections, 1, 'no new login')
  assert.equal(again.value('probe_success'), 0)
  assert.equal(again.value('probe_auth_backoff'), 1)
  assert.equal(again.failedPhase, 'auth')
  assert.equal(again.value('probe_smtp_status_code'), 535, 'the last attempt, repeated')
  assert.match(again.debug, /not logging in again: the last login was refused \(auth_backoff\)/)
  assert.match(again.debug, /The last attempt:\n.*beginning probe/)
  assert.doesNotMatch(again.debug, /wrong-secret/)

  await sleep(1100)
  const later = await probe(smtp('auth_backoff: 1s'), target, { backoff })
  assert.equal(server.connections, 2, 'the period is over: one new login')
  assert.equal(later.value('probe_auth_backoff'), 0)
  assert.equal(backoff.size, 1, 'refused again: backing off again')
})

test('auth_backoff: a successful login, a failure that is no refusal, and auth_backoff: 0s never back off', async (t) => {
  const refusing = await scriptedServer(
    t,
    smtpScript({ starttls: false, authBeforeTls: true, auth: '535 5.7.8 no' }),
  )
  const backoff = new AuthBackoff<RefusedAttempt>()
  const off = `127.0.0.1:${refusing.port}`
  await probe(smtp('auth_backoff: 0s'), off, { backoff })
  await probe(smtp('auth_backoff: 0s'), off, { backoff })
  assert.equal(refusing.connections, 2)

  const ok = await scriptedServer(t, smtpScript({ starttls: false, authBeforeTls: true }))
  for (let i = 0; i < 2; i++) {
    const r = await probe(smtp(), `127.0.0.1:${ok.port}`, { backoff })
    assert.equal(r.value('probe_success'), 1, r.debug)
    assert.equal(r.value('probe_auth_backoff'), 0)
  }
  assert.equal(ok.connections, 2)

  // A 421 at the banner is the server's trouble, not the password's: the next probe tries again.
  const busy = await scriptedServer(t, smtpScript({ banner: '421 4.3.2 busy' }))
  await probe(smtp(), `127.0.0.1:${busy.port}`, { backoff })
  await probe(smtp(), `127.0.0.1:${busy.port}`, { backoff })
  assert.equal(busy.connections, 2)
  assert.equal(backoff.size, 0)

  // A module that does not log in has no probe_auth_backoff at all.
  const banner = await probe(`prober: smtp\nsmtp: { tls: none }`, `127.0.0.1:${ok.port}`, { backoff })
  assert.equal(banner.value('probe_auth_backoff'), undefined)
})

test('auth_backoff: a token endpoint that refuses the client (invalid_client) is asked once per period too', async (t) => {
  const endpoint = await tokenEndpoint(t)
  const server = await scriptedServer(t, smtpScript({ starttls: false, authBeforeTls: true }))
  const backoff = new AuthBackoff<RefusedAttempt>()
  const oauth2 = `{ username: monitor@mx.test, allow_plaintext: true, oauth2: { token_url: "${endpoint.url}", client_id: probe-client, client_secret: wrong, tls_config: { ca_file: ${endpoint.caFile} } } }`
  for (let i = 0; i < 3; i++) {
    const r = await probe(smtp('', oauth2), `127.0.0.1:${server.port}`, { backoff })
    assert.equal(r.failedPhase, 'token', r.debug)
    assert.equal(r.value('probe_auth_backoff'), i === 0 ? 0 : 1)
  }
  assert.equal(endpoint.count(), 1)
  assert.equal(server.connections, 0)
})
