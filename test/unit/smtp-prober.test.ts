// smtp prober against in-process servers: scripted faults in every phase, certificates, mechanism choice.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { certs } from '../servers/certs.ts'
import { scriptedServer, silentServer } from '../servers/scripted.ts'
import { smtpScript } from '../servers/smtp.ts'
import { probe } from '../helpers/probe.ts'
import { ScramClient } from '../../src/protocol/sasl.ts'

const ca = () => certs().caFile
const submission = (extra = '', auth = 'auth: { username: probe@mx.test, password: secret }') => `
prober: smtp
allowed_targets: [127.0.0.1]
timeout: 5s
smtp:
  tls: starttls
  tls_config: { ca_file: ${ca()} }
  ${auth}
  ${extra}`

test('smtp: STARTTLS + AUTH + test mail against a scripted server succeeds and times every phase', async (t) => {
  const server = await scriptedServer(t, smtpScript())
  const r = await probe(
    submission('send: { from: probe@mx.test, to: [a@mx.test, b@mx.test] }'),
    `127.0.0.1:${server.port}`,
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  for (const phase of [
    'connect',
    'tls',
    'banner',
    'ehlo',
    'starttls',
    'ehlo_tls',
    'auth',
    'mail',
    'rcpt',
    'data',
    'quit',
  ])
    assert.ok((r.value('probe_smtp_duration_seconds', { phase }) ?? 0) > 0, `phase ${phase} timed`)
  assert.equal(r.value('probe_smtp_status_code'), 221)
  assert.equal(
    r.value('probe_smtp_auth_mechanism_used', { mechanism: 'CRAM-MD5' }),
    1,
    'strongest common mechanism',
  )
  assert.equal(r.value('probe_smtp_auth_mechanism_advertised', { stage: 'tls', mechanism: 'PLAIN' }), 1)
  assert.equal(r.value('probe_smtp_starttls_advertised'), 1)
  assert.equal(r.value('probe_smtp_auth_offered_before_tls'), 0)
  assert.equal(r.value('probe_tls_version_info', { version: 'TLS 1.3' }), 1)
  assert.ok((r.value('probe_ssl_earliest_cert_expiry') ?? 0) > Date.now() / 1000)
  assert.equal(server.received.filter((l) => l.startsWith('RCPT TO:')).length, 2)
  assert.match(r.debug, /queue_id=ABC123/)
  assert.deepEqual(server.errors, [])
})

test('smtp: the debug transcript redacts AUTH payloads and never shows the password', async (t) => {
  const server = await scriptedServer(t, smtpScript({ mechanisms: 'PLAIN LOGIN' }))
  for (const mechanism of ['PLAIN', 'LOGIN']) {
    const r = await probe(
      submission(
        '',
        `auth: { username: probe@mx.test, password: hunter2-secret, mechanisms: [${mechanism}] }`,
      ),
      `127.0.0.1:${server.port}`,
    )
    assert.equal(r.value('probe_success'), 1, r.debug)
    assert.doesNotMatch(r.debug, /hunter2/)
    assert.doesNotMatch(r.debug, new RegExp(Buffer.from('hunter2-secret').toString('base64').slice(0, 12)))
    assert.match(r.debug, /C: AUTH (PLAIN <redacted>|LOGIN)/)
    assert.match(r.debug, /password: <secret>/)
  }
})

for (const [phase, faults, code] of [
  ['banner', { banner: '554 5.3.2 no service' }, 554],
  ['ehlo', { ehlo: '421 4.3.2 shutting down' }, 421],
  ['starttls', { starttls: '454 4.7.0 TLS not available' }, 454],
  ['auth', { auth: '535 5.7.8 Authentication credentials invalid' }, 535],
  ['mail', { mail: '451 4.3.0 try later' }, 451],
  ['rcpt', { rcpt: '550 5.1.1 no such user' }, 550],
  ['data', { data: '554 5.5.1 no valid recipients' }, 554],
  ['data', { final: '552 5.3.4 message too big' }, 552],
] as const) {
  test(`smtp: a ${code} reply in phase ${phase} fails fast with that phase and code`, async (t) => {
    const server = await scriptedServer(t, smtpScript(faults))
    const r = await probe(
      submission('send: { from: probe@mx.test, to: a@mx.test }'),
      `127.0.0.1:${server.port}`,
    )
    assert.equal(r.value('probe_success'), 0)
    assert.equal(r.failedPhase, phase, r.debug)
    assert.equal(r.value('probe_smtp_status_code'), code)
    assert.ok(r.seconds < 2, `failed fast (${r.seconds}s), not at the deadline`)
  })
}

test('smtp: a silent server fails in phase banner within the deadline', async (t) => {
  const server = await silentServer(t)
  const r = await probe(submission(), `127.0.0.1:${server.port}`, { scrapeTimeout: '1.5' })
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'banner')
  assert.equal(r.value('probe_timeout_seconds'), 1)
  assert.ok(r.seconds >= 0.95 && r.seconds < 1.3, `answered at ${r.seconds}s for a 1 s deadline`)
})

test('smtp: a server that stops answering after AUTH fails in phase auth at the deadline', async (t) => {
  const server = await scriptedServer(t, async (c) => {
    c.line('220 mx.test ESMTP')
    await c.expect('EHLO')
    c.line('250-mx.test\r\n250 AUTH PLAIN')
    await c.expect('AUTH PLAIN')
    await c.closed()
  })
  const r = await probe(
    submission('', 'auth: { username: u, password: p, allow_plaintext: true }').replace(
      'tls: starttls',
      'tls: none',
    ),
    `127.0.0.1:${server.port}`,
    { scrapeTimeout: '1.5' },
  )
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'auth')
  assert.ok(r.seconds < 1.3)
})

test('smtp: a server that closes after the greeting fails in phase ehlo', async (t) => {
  const server = await scriptedServer(t, async (c) => {
    c.line('220 mx.test ESMTP')
    await c.expect('EHLO')
    c.close()
  })
  const r = await probe(submission(), `127.0.0.1:${server.port}`)
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'ehlo')
})

test('smtp: a closed port fails in phase connect', async () => {
  const server = await silentServer(undefined)
  const port = server.port
  await server.close()
  const r = await probe(submission(), `127.0.0.1:${port}`)
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'connect')
})

for (const [name, cert] of [
  ['an expired', () => certs().expired],
  ['a wrong-name', () => certs().wrongName],
  ['a self-signed', () => certs().selfSigned],
] as const) {
  test(`smtp: ${name} certificate fails in phase tls but still reports TLS facts`, async (t) => {
    const server = await scriptedServer(t, smtpScript({ cert: cert() }))
    const r = await probe(submission(), `127.0.0.1:${server.port}`)
    assert.equal(r.value('probe_success'), 0)
    assert.equal(r.failedPhase, 'tls', r.debug)
    assert.ok(r.value('probe_ssl_earliest_cert_expiry') !== undefined)
    assert.equal(r.value('probe_ssl_last_chain_expiry_timestamp_seconds'), undefined, 'no verified chain')
    assert.ok(!server.received.some((l) => l.startsWith('AUTH')), 'no credentials sent')
    assert.equal(
      r.value('probe_smtp_starttls_advertised'),
      1,
      'what the server offered in the clear is still reported',
    )
    assert.equal(r.value('probe_smtp_ehlo_extension_info', { stage: 'plain', extension: 'STARTTLS' }), 1)
  })
}

test('smtp: implicit TLS with a certificate from the configured CA succeeds', async (t) => {
  // With implicit TLS the whole session is encrypted: the script announces AUTH on its (only) EHLO.
  const server = await scriptedServer(t, smtpScript({ starttls: false, authBeforeTls: true }), {
    implicitTls: certs().good,
  })
  const r = await probe(submission().replace('tls: starttls', 'tls: implicit'), `127.0.0.1:${server.port}`)
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.ok((r.value('probe_smtp_duration_seconds', { phase: 'tls' }) ?? 0) > 0)
  assert.equal(r.value('probe_smtp_duration_seconds', { phase: 'starttls' }), 0)
  assert.ok(r.value('probe_ssl_last_chain_expiry_timestamp_seconds') !== undefined)
})

test('smtp: tls_config.max_version caps the protocol version (TLS 1.2 against a TLS 1.3 server)', async (t) => {
  const server = await scriptedServer(t, smtpScript({ starttls: false, authBeforeTls: true }), {
    implicitTls: certs().good,
  })
  const target = `127.0.0.1:${server.port}`
  const implicit = submission().replace('tls: starttls', 'tls: implicit')
  const capped = await probe(implicit.replace('tls_config: {', 'tls_config: { max_version: TLS12,'), target)
  assert.equal(capped.value('probe_success'), 1, capped.debug)
  assert.equal(capped.value('probe_tls_version_info', { version: 'TLS 1.2' }), 1)
  const free = await probe(implicit, target)
  assert.equal(free.value('probe_tls_version_info', { version: 'TLS 1.3' }), 1)
})

test('smtp: STARTTLS required but not offered fails in phase starttls before any credentials', async (t) => {
  const server = await scriptedServer(t, smtpScript({ starttls: false, authBeforeTls: true }))
  const r = await probe(submission(), `127.0.0.1:${server.port}`)
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'starttls')
  assert.equal(r.value('probe_smtp_starttls_advertised'), 0)
  assert.equal(r.value('probe_smtp_auth_offered_before_tls'), 1)
  assert.ok(!server.received.some((l) => l.startsWith('AUTH')))
})

test('smtp: credentials are not sent in the clear unless allow_plaintext', async (t) => {
  // tls: none with credentials and no allow_plaintext is refused when the config loads ...
  await assert.rejects(
    probe(submission().replace('tls: starttls', 'tls: none'), '127.0.0.1:25'),
    /smtp\.tls: tls: none would send the password in the clear/,
  )
  // ... and at run time when an opportunistic session ends up in the clear.
  const server = await scriptedServer(t, smtpScript({ starttls: false, authBeforeTls: true }))
  const plain = submission().replace('tls: starttls', 'tls: starttls_opportunistic')
  const refused = await probe(plain, `127.0.0.1:${server.port}`)
  assert.equal(refused.value('probe_success'), 0)
  assert.equal(refused.failedPhase, 'auth')
  assert.match(refused.debug, /refusing to send credentials without TLS/)
  assert.ok(!server.received.some((l) => l.startsWith('AUTH')))
  const allowed = await probe(
    plain.replace('password: secret }', 'password: secret, allow_plaintext: true }'),
    `127.0.0.1:${server.port}`,
  )
  assert.equal(allowed.value('probe_success'), 1, allowed.debug)
})

test('smtp: retry_with_starttls reconnects over TLS when AUTH is not offered in the clear', async (t) => {
  const server = await scriptedServer(t, smtpScript())
  const r = await probe(
    submission('retry_with_starttls: true').replace('tls: starttls', 'tls: none'),
    `127.0.0.1:${server.port}`,
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(server.connections, 2)
  assert.equal(r.value('probe_smtp_auth_retried_with_starttls'), 1)
  assert.equal(r.value('probe_tls_version_info', { version: 'TLS 1.3' }), 1)
  // STARTTLS offered and used on the first connection: no retry, and the metric says 0.
  const first = await probe(
    submission('retry_with_starttls: true').replace('tls: starttls', 'tls: starttls_opportunistic'),
    `127.0.0.1:${server.port}`,
  )
  assert.equal(first.value('probe_success'), 1, first.debug)
  assert.equal(first.value('probe_smtp_auth_retried_with_starttls'), 0)
})

test('smtp: retry_with_starttls does not reconnect when the refusal came over TLS already', async (t) => {
  // STARTTLS worked (opportunistic), but nothing in common after it: a new STARTTLS connection would
  // meet the same server, so the probe fails at once in auth instead.
  const server = await scriptedServer(t, smtpScript({ mechanisms: 'PLAIN' }))
  const r = await probe(
    submission(
      'retry_with_starttls: true',
      'auth: { username: u, password: p, mechanisms: [LOGIN] }',
    ).replace('tls: starttls', 'tls: starttls_opportunistic'),
    `127.0.0.1:${server.port}`,
  )
  assert.equal(r.failedPhase, 'auth', r.debug)
  assert.match(r.debug, /no usable mechanism in common/)
  assert.equal(server.connections, 1)
  assert.equal(r.value('probe_smtp_auth_retried_with_starttls'), 0)
})

test('smtp: try_all_mechanisms goes on to the next mechanism after a 535', async (t) => {
  const server = await scriptedServer(t, smtpScript({ auth: 'mech:CRAM-MD5:535 5.7.8 no' }))
  const r = await probe(
    submission('', 'auth: { username: u, password: p, try_all_mechanisms: true }'),
    `127.0.0.1:${server.port}`,
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_smtp_auth_mechanism_used', { mechanism: 'PLAIN' }), 1)
  const single = await probe(submission('', 'auth: { username: u, password: p }'), `127.0.0.1:${server.port}`)
  assert.equal(single.failedPhase, 'auth')
})

test('smtp: a configured mechanism list wins over strength, and no common mechanism is a clear auth failure', async (t) => {
  const server = await scriptedServer(t, smtpScript({ mechanisms: 'PLAIN LOGIN CRAM-MD5' }))
  const r = await probe(
    submission('', 'auth: { username: u, password: p, mechanisms: [LOGIN, PLAIN] }'),
    `127.0.0.1:${server.port}`,
  )
  assert.equal(r.value('probe_smtp_auth_mechanism_used', { mechanism: 'LOGIN' }), 1)
  const none = await probe(
    submission('', 'auth: { username: u, password: p, mechanisms: [SCRAM-SHA-256] }'),
    `127.0.0.1:${server.port}`,
  )
  assert.equal(none.failedPhase, 'auth')
  assert.match(none.debug, /no usable mechanism in common/)
})

test('smtp: without pipelining MAIL, RCPT and DATA are separate round trips', async (t) => {
  let early = false
  const server = await scriptedServer(t, async (c) => {
    c.line('220 mx.test ESMTP')
    await c.expect('EHLO')
    c.line('250-mx.test\r\n250 PIPELINING')
    await c.expect('MAIL FROM')
    await new Promise((r) => setTimeout(r, 30))
    early = server.received.some((l) => l.startsWith('RCPT'))
    c.line('250 ok')
    await c.expect('RCPT TO')
    c.line('250 ok')
    await c.expect('DATA')
    c.line('354 go')
    while ((await c.expect()) !== '.') {
      // body
    }
    c.line('250 ok')
    await c.expect('QUIT')
    c.line('221 bye')
    c.close()
  })
  const r = await probe(
    `
prober: smtp
allowed_targets: [127.0.0.1]
smtp:
  tls: none
  send: { from: a@mx.test, to: b@mx.test }`,
    `127.0.0.1:${server.port}`,
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(early, false, 'RCPT must wait for the reply to MAIL')
  assert.ok((r.value('probe_smtp_duration_seconds', { phase: 'mail' }) ?? 0) >= 0.025)
})

test('smtp: SCRAM-SHA-256 authenticates against a server that checks the proof', async (t) => {
  // The server recomputes the proof a correct client sends for password "pencil" with the same nonces.
  const server = await scriptedServer(t, async (c) => {
    c.line('220 mx.test ESMTP')
    await c.expect('EHLO')
    c.line('250-mx.test\r\n250-STARTTLS\r\n250 ENHANCEDSTATUSCODES')
    await c.expect('STARTTLS')
    c.line('220 go')
    await c.startTls(certs().good)
    await c.expect('EHLO')
    c.line('250-mx.test\r\n250 AUTH SCRAM-SHA-256 PLAIN')
    const first = await c.expect('AUTH SCRAM-SHA-256 ')
    const clientFirst = Buffer.from(first.split(' ')[2] ?? '', 'base64').toString()
    const clientNonce = /r=([^,]+)/.exec(clientFirst)?.[1] ?? ''
    const salt = Buffer.from('mailprobe-salt').toString('base64')
    const serverFirst = `r=${clientNonce}srv,s=${salt},i=4096`
    c.line('334 ' + Buffer.from(serverFirst).toString('base64'))
    const final = Buffer.from(await c.expect(), 'base64').toString()
    // Recompute what a correct client sends, with the same nonce, and compare the proof.
    const reference = new ScramClient('SCRAM-SHA-256', 'user', 'pencil', clientNonce)
    reference.first()
    const expected = Buffer.from(
      await reference.final(Buffer.from(serverFirst).toString('base64')),
      'base64',
    ).toString()
    if (final !== expected) {
      c.line('535 5.7.8 bad proof')
      return c.closed()
    }
    c.line('235 2.7.0 ok')
    await c.expect('QUIT')
    c.line('221 bye')
    c.close()
  })
  const r = await probe(
    submission('', 'auth: { username: user, password: pencil }'),
    `127.0.0.1:${server.port}`,
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_smtp_auth_mechanism_used', { mechanism: 'SCRAM-SHA-256' }), 1)
  const wrong = await probe(
    submission('', 'auth: { username: user, password: pencil2 }'),
    `127.0.0.1:${server.port}`,
  )
  assert.equal(wrong.failedPhase, 'auth')
})

test('smtp: the enhanced status code always belongs to the same reply as the reply code', async (t) => {
  // STARTTLS is answered "220 2.0.0", AUTH "535" without an enhanced code: 535 must not pair with 2.0.0.
  const server = await scriptedServer(t, smtpScript({ auth: '535 Authentication failed' }))
  const r = await probe(submission(), `127.0.0.1:${server.port}`)
  assert.equal(r.failedPhase, 'auth')
  assert.equal(r.value('probe_smtp_status_code'), 535)
  assert.equal(r.value('probe_smtp_enhanced_status_code'), 0)
})
