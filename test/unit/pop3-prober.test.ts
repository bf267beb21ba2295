// pop3 prober against in-process servers: a -ERR in every phase, certificates, credential rules, mechanism choice.
import assert from 'node:assert/strict'
import { createHash, createHmac } from 'node:crypto'
import { test } from 'node:test'
import { certs } from '../servers/certs.ts'
import { scriptedServer, silentServer, type ScriptConnection } from '../servers/scripted.ts'
import { probe } from '../helpers/probe.ts'

const PASSWORD = 's3cret-pw'
const TIMESTAMP = '<4711.1700000000@pop.test>'

interface Pop3Faults {
  greeting?: string
  /** CAPA lines in the clear; 'ERR' for a server that predates CAPA. */
  capa?: string[] | 'ERR'
  /** CAPA lines after TLS (default: the cleartext ones without STLS). */
  capaTls?: string[]
  cert?: { cert: Buffer; key: Buffer }
  /** Close the connection instead of starting TLS after "+OK" to STLS. */
  stlsThenClose?: boolean
  /** Replace the reply to a command (by verb, or AUTH:<mechanism>) with this line. */
  reply?: Partial<Record<string, string>>
}

const DEFAULT_CAPA = ['TOP', 'UIDL', 'RESP-CODES', 'STLS', 'USER', 'SASL PLAIN LOGIN CRAM-MD5']

/** A well-behaved POP3 server (STLS, USER, APOP, AUTH PLAIN/LOGIN/CRAM-MD5) whose reply to any command can be replaced. */
function pop3Script(f: Pop3Faults = {}) {
  return async (c: ScriptConnection) => {
    c.line(f.greeting ?? `+OK POP3 ready ${TIMESTAMP}`)
    if (f.greeting?.startsWith('-ERR')) return c.closed()
    let capa = f.capa ?? DEFAULT_CAPA
    for (;;) {
      const line = await c.expect().catch(() => undefined)
      if (line === undefined) return // the client went away
      const [verb = '', arg1 = '', arg2 = ''] = line.split(' ')
      const replaced = f.reply?.[verb === 'AUTH' ? `AUTH:${arg1}` : verb] ?? f.reply?.[verb]
      if (replaced !== undefined) {
        c.line(replaced)
        continue
      }
      if (verb === 'CAPA') {
        c.line(capa === 'ERR' ? '-ERR unknown command' : ['+OK', ...capa, '.'].join('\r\n'))
      } else if (verb === 'STLS') {
        c.line('+OK Begin TLS negotiation now.')
        if (f.stlsThenClose) return c.close()
        await c.startTls(f.cert ?? certs().good)
        capa = f.capaTls ?? (capa === 'ERR' ? 'ERR' : capa.filter((l) => l !== 'STLS'))
      } else if (verb === 'USER') {
        c.line('+OK')
      } else if (verb === 'PASS') {
        c.line(line === `PASS ${PASSWORD}` ? '+OK Logged in.' : '-ERR [AUTH] Authentication failed.')
      } else if (verb === 'APOP') {
        const digest = createHash('md5')
          .update(TIMESTAMP + PASSWORD)
          .digest('hex')
        c.line(arg2 === digest ? '+OK Logged in.' : '-ERR [AUTH] Authentication failed.')
      } else if (verb === 'AUTH' && arg1 === 'PLAIN') {
        const ok = Buffer.from(arg2, 'base64').toString() === `\0probe@pop.test\0${PASSWORD}`
        c.line(ok ? '+OK Logged in.' : '-ERR [AUTH] Authentication failed.')
      } else if (verb === 'AUTH' && arg1 === 'CRAM-MD5') {
        const challenge = '<1.2@pop.test>'
        c.line('+ ' + Buffer.from(challenge).toString('base64'))
        const answer = Buffer.from(await c.expect(), 'base64').toString()
        const digest = createHmac('md5', PASSWORD).update(challenge).digest('hex')
        c.line(
          answer === `probe@pop.test ${digest}` ? '+OK Logged in.' : '-ERR [AUTH] Authentication failed.',
        )
      } else if (verb === 'STAT') {
        c.line('+OK 2 320')
      } else if (verb === 'UIDL') {
        c.line('+OK\r\n1 aaa\r\n2 bbb\r\n.')
      } else if (verb === 'LIST') {
        c.line('+OK 2 messages\r\n1 120\r\n2 200\r\n.')
      } else if (verb === 'QUIT') {
        c.line('+OK Logging out.')
        c.close()
        return
      } else {
        c.line('-ERR unknown command')
      }
    }
  }
}

const ca = () => certs().caFile
/** A pop3 module; `extra` lines go under `pop3:`, `auth` replaces the auth line. */
const pop3Module = (extra = '', auth = '') => `
prober: pop3
allowed_targets: [127.0.0.1]
timeout: 5s
pop3:
  tls_config: { ca_file: ${ca()} }
  auth: { username: probe@pop.test, password: ${PASSWORD}${auth} }
  ${extra}`

const target = (port: number) => `127.0.0.1:${port}`
const credentialLines = (received: readonly string[]) =>
  received.filter((l) => /^(USER|PASS|APOP|AUTH)\b/.test(l))

test('pop3: STLS then AUTH PLAIN succeeds, times every phase and reports the facts', async (t) => {
  const server = await scriptedServer(t, pop3Script())
  const r = await probe(pop3Module('tls: stls', ', mechanisms: [PLAIN]'), target(server.port))
  assert.equal(r.value('probe_success'), 1, r.debug)
  for (const phase of [
    'resolve',
    'connect',
    'tls',
    'banner',
    'capa',
    'stls',
    'capa_tls',
    'auth',
    'stat',
    'quit',
  ])
    assert.ok((r.value('probe_pop3_duration_seconds', { phase }) ?? 0) > 0, `phase ${phase} > 0`)
  assert.equal(r.value('probe_pop3_duration_seconds', { phase: 'list' }), 0)
  assert.equal(r.value('probe_pop3_messages'), 2)
  assert.equal(r.value('probe_pop3_size_bytes'), 320)
  assert.equal(r.value('probe_pop3_starttls_advertised'), 1)
  assert.equal(r.value('probe_pop3_auth_offered_before_tls'), 1)
  assert.equal(r.value('probe_pop3_capability_info', { stage: 'plain', capability: 'STLS' }), 1)
  assert.equal(r.value('probe_pop3_capability_info', { stage: 'tls', capability: 'STLS' }), undefined)
  assert.equal(r.value('probe_pop3_capability_info', { stage: 'tls', capability: 'UIDL' }), 1)
  for (const mechanism of ['PLAIN', 'LOGIN', 'CRAM-MD5', 'USER', 'APOP'])
    assert.equal(r.value('probe_pop3_auth_mechanism_advertised', { stage: 'tls', mechanism }), 1, mechanism)
  assert.equal(r.value('probe_pop3_auth_mechanism_used', { mechanism: 'PLAIN' }), 1)
  assert.equal(r.value('probe_tls_version_info', { version: 'TLS 1.3' }), 1)
  assert.match(r.debug, /C: AUTH PLAIN <redacted>/)
  assert.doesNotMatch(r.debug, new RegExp(PASSWORD))
  assert.deepEqual(server.errors, [])
})

test('pop3: implicit TLS skips STLS and reports capabilities at stage tls only', async (t) => {
  const server = await scriptedServer(t, pop3Script({ capa: ['USER', 'UIDL'] }), {
    implicitTls: certs().good,
  })
  const r = await probe(
    pop3Module('tls: implicit\n  list: true', ', mechanisms: [USER]'),
    target(server.port),
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.ok((r.value('probe_pop3_duration_seconds', { phase: 'tls' }) ?? 0) > 0)
  assert.ok((r.value('probe_pop3_duration_seconds', { phase: 'list' }) ?? 0) > 0)
  assert.equal(r.value('probe_pop3_duration_seconds', { phase: 'stls' }), 0)
  assert.equal(r.value('probe_pop3_duration_seconds', { phase: 'capa_tls' }), 0)
  assert.equal(r.value('probe_pop3_capability_info', { stage: 'tls', capability: 'UIDL' }), 1)
  assert.equal(r.value('probe_pop3_capability_info', { stage: 'plain' }), undefined)
  // Only a cleartext CAPA says anything about STLS or cleartext logins.
  assert.equal(r.value('probe_pop3_starttls_advertised'), undefined)
  assert.equal(r.value('probe_pop3_auth_offered_before_tls'), undefined)
  assert.equal(r.value('probe_pop3_auth_mechanism_used', { mechanism: 'USER' }), 1)
  assert.ok(server.received.includes('UIDL') && server.received.includes('LIST'))
  assert.match(r.debug, /C: PASS <redacted>/)
})

test('pop3: by default the strongest mechanism both sides support is used (CRAM-MD5 over APOP, PLAIN, USER)', async (t) => {
  const server = await scriptedServer(t, pop3Script())
  const r = await probe(pop3Module('tls: stls'), target(server.port))
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_pop3_auth_mechanism_used', { mechanism: 'CRAM-MD5' }), 1)
})

test('pop3: APOP is chosen when the greeting has a timestamp and no SASL mechanism is stronger', async (t) => {
  const server = await scriptedServer(t, pop3Script({ capa: ['USER', 'STLS', 'SASL PLAIN'] }))
  const r = await probe(pop3Module('tls: stls'), target(server.port))
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_pop3_auth_mechanism_used', { mechanism: 'APOP' }), 1)
  assert.match(r.debug, /C: APOP probe@pop.test <redacted>/)
})

test('pop3: a server that says nothing fails in phase banner within the deadline', async (t) => {
  const server = await silentServer(t)
  const r = await probe(pop3Module('tls: stls').replace('timeout: 5s', 'timeout: 1s'), target(server.port))
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'banner')
  assert.ok(r.seconds < 1.3, `took ${r.seconds}s`)
})

test('pop3: -ERR as greeting fails in phase banner with the server text', async (t) => {
  const server = await scriptedServer(t, pop3Script({ greeting: '-ERR [SYS/TEMP] too busy' }))
  const r = await probe(pop3Module('tls: stls'), target(server.port))
  assert.equal(r.failedPhase, 'banner')
  assert.match(r.debug, /too busy/)
})

test('pop3: a server without CAPA is tolerated, and USER is assumed', async (t) => {
  const server = await scriptedServer(t, pop3Script({ capa: 'ERR', greeting: '+OK old server' }))
  const r = await probe(pop3Module('tls: none', ', allow_plaintext: true'), target(server.port))
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_pop3_auth_mechanism_used', { mechanism: 'USER' }), 1)
  assert.equal(r.value('probe_pop3_capability_info'), undefined)
  assert.equal(r.value('probe_pop3_starttls_advertised'), 0)
  assert.equal(r.value('probe_pop3_auth_offered_before_tls'), 1)
})

test('pop3: with tls: stls and no CAPA, STLS is tried anyway', async (t) => {
  const server = await scriptedServer(t, pop3Script({ capa: 'ERR', greeting: '+OK old server' }))
  const r = await probe(pop3Module('tls: stls'), target(server.port))
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.ok(server.received.includes('STLS'))
  assert.ok((r.value('probe_pop3_duration_seconds', { phase: 'capa_tls' }) ?? 0) > 0)
})

test('pop3: -ERR to STLS fails in phase stls with the server text', async (t) => {
  const server = await scriptedServer(t, pop3Script({ reply: { STLS: '-ERR TLS not available now' } }))
  const r = await probe(pop3Module('tls: stls'), target(server.port))
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'stls')
  assert.match(r.debug, /TLS not available now/)
  assert.deepEqual(credentialLines(server.received), [])
})

test('pop3: STLS required but not offered fails in phase stls without sending credentials', async (t) => {
  const server = await scriptedServer(t, pop3Script({ capa: ['USER', 'SASL PLAIN'] }))
  const r = await probe(pop3Module('tls: stls'), target(server.port))
  assert.equal(r.failedPhase, 'stls')
  assert.match(r.debug, /STLS is required/)
  assert.equal(r.value('probe_pop3_starttls_advertised'), 0)
  assert.deepEqual(credentialLines(server.received), [])
})

test('pop3: stls_opportunistic without STLS refuses credentials in the clear (phase auth)', async (t) => {
  const server = await scriptedServer(t, pop3Script({ capa: ['USER', 'SASL PLAIN'] }))
  const r = await probe(pop3Module('tls: stls_opportunistic'), target(server.port))
  assert.equal(r.failedPhase, 'auth')
  assert.match(r.debug, /refusing to send credentials without TLS/)
  assert.deepEqual(credentialLines(server.received), [])
})

test('pop3: stls_opportunistic uses STLS when it is offered', async (t) => {
  const server = await scriptedServer(t, pop3Script())
  const r = await probe(pop3Module('tls: stls_opportunistic'), target(server.port))
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.ok((r.value('probe_pop3_duration_seconds', { phase: 'tls' }) ?? 0) > 0)
})

test('pop3: credentials go in the clear only with allow_plaintext', async (t) => {
  await assert.rejects(
    probe(pop3Module('tls: none'), target(1)),
    /pop3\.tls: tls: none would send the password in the clear/,
  )
  // At run time: an opportunistic session against a server without STLS ends up in the clear.
  const refused = await scriptedServer(t, pop3Script({ capa: DEFAULT_CAPA.filter((c) => c !== 'STLS') }))
  const r1 = await probe(pop3Module('tls: stls_opportunistic'), target(refused.port))
  assert.equal(r1.failedPhase, 'auth')
  assert.deepEqual(credentialLines(refused.received), [])

  const allowed = await scriptedServer(t, pop3Script())
  const r2 = await probe(pop3Module('tls: none', ', allow_plaintext: true'), target(allowed.port))
  assert.equal(r2.value('probe_success'), 1, r2.debug)
  assert.equal(r2.value('probe_tls_version_info'), undefined)
})

test('pop3: a server that closes after +OK to STLS fails in phase tls', async (t) => {
  const server = await scriptedServer(t, pop3Script({ stlsThenClose: true }))
  const r = await probe(pop3Module('tls: stls'), target(server.port))
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'tls')
})

for (const [name, cert, reason] of [
  ['an expired', () => certs().expired, /CERT_HAS_EXPIRED/],
  ['a wrong-name', () => certs().wrongName, /ERR_TLS_CERT_ALTNAME_INVALID|altnames|does not match/i],
  ['a self-signed', () => certs().selfSigned, /SELF_SIGNED|self.signed/i],
] as const) {
  test(`pop3: ${name} certificate after STLS fails in phase tls, with the certificate facts kept`, async (t) => {
    const server = await scriptedServer(t, pop3Script({ cert: cert() }))
    const r = await probe(pop3Module('tls: stls'), target(server.port))
    assert.equal(r.value('probe_success'), 0)
    assert.equal(r.failedPhase, 'tls')
    assert.match(r.debug, reason)
    assert.ok((r.value('probe_ssl_earliest_cert_expiry') ?? 0) > 0)
    assert.deepEqual(credentialLines(server.received), [])
  })
}

test('pop3: a bad certificate with implicit TLS fails in phase tls', async (t) => {
  const server = await scriptedServer(t, pop3Script(), { implicitTls: certs().wrongName })
  const r = await probe(pop3Module('tls: implicit'), target(server.port))
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'tls')
})

test('pop3: insecure_skip_verify lets the handshake finish but never sends credentials over it', async (t) => {
  const server = await scriptedServer(t, pop3Script({ cert: certs().selfSigned }))
  const r = await probe(
    pop3Module('tls: stls').replace(`{ ca_file: ${ca()} }`, '{ insecure_skip_verify: true }'),
    target(server.port),
  )
  assert.equal(r.failedPhase, 'auth')
  assert.match(r.debug, /TLS whose certificate did not verify/)
  assert.equal(r.value('probe_tls_version_info', { version: 'TLS 1.3' }), 1)
  assert.deepEqual(credentialLines(server.received), [])
})

test('pop3: -ERR to AUTH fails in phase auth with the server text', async (t) => {
  const server = await scriptedServer(
    t,
    pop3Script({ reply: { 'AUTH:PLAIN': '-ERR [AUTH] Authentication failed.' } }),
  )
  const r = await probe(pop3Module('tls: stls', ', mechanisms: [PLAIN]'), target(server.port))
  assert.equal(r.failedPhase, 'auth')
  assert.match(r.debug, /\[AUTH\] Authentication failed/)
  assert.equal(r.value('probe_pop3_auth_mechanism_used'), undefined)
})

test('pop3: a wrong password for USER fails in phase auth', async (t) => {
  const server = await scriptedServer(t, pop3Script())
  const r = await probe(
    pop3Module('tls: stls', ', mechanisms: [USER]').replace(`password: ${PASSWORD}`, 'password: wrong'),
    target(server.port),
  )
  assert.equal(r.failedPhase, 'auth')
  assert.match(r.debug, /C: PASS <redacted>/)
  assert.doesNotMatch(r.debug, /PASS wrong/)
})

test('pop3: try_all_mechanisms goes on to the next mechanism after a -ERR', async (t) => {
  const faults = { reply: { 'AUTH:CRAM-MD5': '-ERR [AUTH] CRAM-MD5 is disabled' } }
  const tried = await scriptedServer(t, pop3Script(faults))
  const r = await probe(
    pop3Module('tls: stls', ', mechanisms: [CRAM-MD5, PLAIN], try_all_mechanisms: true'),
    target(tried.port),
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_pop3_auth_mechanism_used', { mechanism: 'PLAIN' }), 1)

  const single = await scriptedServer(t, pop3Script(faults))
  const r2 = await probe(pop3Module('tls: stls', ', mechanisms: [CRAM-MD5, PLAIN]'), target(single.port))
  assert.equal(r2.failedPhase, 'auth')
  assert.deepEqual(
    credentialLines(single.received).map((l) => l.split(' ').slice(0, 2).join(' ')),
    ['AUTH CRAM-MD5'],
  )
})

test('pop3: a configured mechanism the server does not offer fails in phase auth, naming both sides', async (t) => {
  const server = await scriptedServer(t, pop3Script({ capa: ['STLS', 'SASL PLAIN'] }))
  const r = await probe(pop3Module('tls: stls', ', mechanisms: [SCRAM-SHA-256]'), target(server.port))
  assert.equal(r.failedPhase, 'auth')
  assert.match(r.debug, /no usable mechanism in common: server offers PLAIN APOP/)
})

test('pop3: CRAM-MD5 and APOP digests are accepted by a server that checks them', async (t) => {
  for (const mechanism of ['CRAM-MD5', 'APOP']) {
    const server = await scriptedServer(t, pop3Script())
    const r = await probe(pop3Module('tls: stls', `, mechanisms: [${mechanism}]`), target(server.port))
    assert.equal(r.value('probe_success'), 1, r.debug)
    assert.equal(r.value('probe_pop3_auth_mechanism_used', { mechanism }), 1)
  }
})

test('pop3: -ERR to STAT fails in phase stat', async (t) => {
  const server = await scriptedServer(t, pop3Script({ reply: { STAT: '-ERR [IN-USE] maildrop locked' } }))
  const r = await probe(pop3Module('tls: stls'), target(server.port))
  assert.equal(r.failedPhase, 'stat')
  assert.match(r.debug, /maildrop locked/)
  assert.equal(r.value('probe_pop3_messages'), undefined)
})

test('pop3: with list: true, -ERR to UIDL fails in phase list', async (t) => {
  const server = await scriptedServer(t, pop3Script({ reply: { UIDL: '-ERR no UIDL today' } }))
  const r = await probe(pop3Module('tls: stls\n  list: true'), target(server.port))
  assert.equal(r.failedPhase, 'list')
  assert.match(r.debug, /no UIDL today/)
})

test('pop3: with list: true and no UIDL in CAPA, only LIST is sent', async (t) => {
  const server = await scriptedServer(t, pop3Script({ capa: ['STLS', 'USER', 'SASL PLAIN'] }))
  const r = await probe(pop3Module('tls: stls\n  list: true'), target(server.port))
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.ok(server.received.includes('LIST'))
  assert.ok(!server.received.includes('UIDL'))
})

test('pop3: -ERR to QUIT fails in phase quit', async (t) => {
  const server = await scriptedServer(
    t,
    pop3Script({ reply: { QUIT: '-ERR some deleted messages not removed' } }),
  )
  const r = await probe(pop3Module('tls: stls'), target(server.port))
  assert.equal(r.failedPhase, 'quit')
  assert.match(r.debug, /not removed/)
  assert.equal(r.value('probe_pop3_messages'), 2)
})
