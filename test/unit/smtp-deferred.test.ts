// probe_smtp_deferred against scripted servers: a 4xx to the test mail (greylisting) is a deferral, a 5xx is not.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { MailStore, imapScript } from '../servers/imap.ts'
import { scriptedServer, type ScriptConnection } from '../servers/scripted.ts'
import { smtpScript, type SmtpFaults } from '../servers/smtp.ts'
import { roundtripModule } from '../helpers/modules.ts'
import { probe } from '../helpers/probe.ts'

const GREYLISTED =
  '450 4.2.0 <a@mx.test>: Recipient address rejected: Greylisted, see https://postgrey.example/'

/** An MX-style probe: no TLS, no credentials, one test mail (to `to`, YAML). */
const mx = (to = 'a@mx.test', extra = '') => `
prober: smtp
timeout: 3s
allowed_targets: [127.0.0.1]
smtp:
  tls: none
  send: { from: probe@mx.test, to: ${to} }
  ${extra}`

async function run(t: Parameters<typeof scriptedServer>[0], faults: SmtpFaults, module = mx()) {
  const server = await scriptedServer(t, smtpScript({ starttls: false, ...faults }))
  const r = await probe(module, `127.0.0.1:${server.port}`)
  return { r, server }
}

for (const [where, faults, phase, code] of [
  ['RCPT (greylisting)', { rcpt: GREYLISTED }, 'rcpt', 450],
  ['MAIL', { mail: '451 4.3.0 Temporary lookup failure' }, 'mail', 451],
  ['DATA', { data: '451 4.7.1 Please try again later' }, 'data', 451],
  ['the end of data', { final: '452 4.3.1 Insufficient system storage' }, 'data', 452],
] as const) {
  test(`smtp deferred: a ${code} at ${where} is a deferral: deferred 1, phase ${phase}, status code ${code}`, async (t) => {
    const { r, server } = await run(t, faults)
    assert.equal(r.value('probe_success'), 0)
    assert.equal(r.failedPhase, phase, r.debug)
    assert.equal(r.value('probe_smtp_deferred'), 1, r.debug)
    assert.equal(r.value('probe_smtp_status_code'), code, 'the 4xx, not the 221 of the closing QUIT')
    assert.ok(server.received.includes('QUIT'), 'the session still ends with QUIT')
  })
}

test('smtp deferred: the enhanced status code is that of the 4xx reply', async (t) => {
  const { r } = await run(t, { rcpt: GREYLISTED })
  assert.equal(r.value('probe_smtp_enhanced_status_code'), 420)
})

for (const [where, faults, phase, code] of [
  ['RCPT', { rcpt: '550 5.1.1 <a@mx.test>: Recipient address rejected: User unknown' }, 'rcpt', 550],
  ['MAIL', { mail: '553 5.7.1 Sender address rejected' }, 'mail', 553],
  ['DATA', { data: '554 5.5.1 Error: no valid recipients' }, 'data', 554],
  ['the end of data', { final: '552 5.3.4 Message size exceeds fixed limit' }, 'data', 552],
] as const) {
  test(`smtp deferred: a ${code} at ${where} is a hard failure: deferred 0, phase ${phase}`, async (t) => {
    const { r } = await run(t, faults)
    assert.equal(r.value('probe_success'), 0)
    assert.equal(r.failedPhase, phase, r.debug)
    assert.equal(r.value('probe_smtp_deferred'), 0)
    assert.equal(r.value('probe_smtp_status_code'), code)
  })
}

test('smtp deferred: a mail that is accepted exports deferred 0', async (t) => {
  const { r, server } = await run(t, {})
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_smtp_deferred'), 0)
  assert.deepEqual(server.errors, [])
})

test('smtp deferred: a probe that fails before MAIL (even with a 4xx) exports deferred 0', async (t) => {
  const { r } = await run(t, { ehlo: '421 4.3.2 Service shutting down' })
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'ehlo')
  assert.equal(r.value('probe_smtp_status_code'), 421)
  assert.equal(r.value('probe_smtp_deferred'), 0)
})

test('smtp deferred: a module that sends no mail does not export it', async (t) => {
  const { r } = await run(t, {}, mx().replace(/ {2}send: .*\n/, ''))
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_smtp_deferred'), undefined)
})

test('smtp deferred: a connection lost at RCPT is no deferral', async (t) => {
  const server = await scriptedServer(t, async (c) => {
    c.line('220 mx.test ESMTP')
    await c.expect('EHLO')
    c.line('250 mx.test')
    await c.expect('MAIL FROM')
    c.line('250 2.1.0 Ok')
    await c.expect('RCPT TO')
    c.close()
  })
  const r = await probe(mx(), `127.0.0.1:${server.port}`)
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'rcpt', r.debug)
  assert.equal(r.value('probe_smtp_deferred'), 0)
})

/** An SMTP server without extensions that answers RCPT by recipient (`replies`, default 250). */
function perRecipient(replies: Record<string, string>) {
  return async (c: ScriptConnection) => {
    c.line('220 mx.test ESMTP')
    for (;;) {
      const line = await c.expect()
      const verb = line.split(/[ :]/)[0]?.toUpperCase()
      if (verb === 'EHLO') c.line('250-mx.test\r\n250 ENHANCEDSTATUSCODES')
      else if (verb === 'RCPT') c.line(replies[/<(.*)>/.exec(line)?.[1] ?? ''] ?? '250 2.1.5 Ok')
      else if (verb === 'DATA') {
        c.line('354 go ahead')
        while ((await c.expect()) !== '.');
        c.line('250 2.0.0 Ok: queued as DEF456')
      } else if (verb === 'QUIT') {
        c.line('221 2.0.0 Bye')
        c.close()
        return
      } else c.line('250 2.0.0 Ok')
    }
  }
}

test('smtp deferred: one greylisted recipient of two fails in rcpt as deferred, with its 450', async (t) => {
  const server = await scriptedServer(t, perRecipient({ 'b@mx.test': GREYLISTED.replace('a@', 'b@') }))
  const r = await probe(mx('[a@mx.test, b@mx.test]'), `127.0.0.1:${server.port}`)
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'rcpt', r.debug)
  assert.equal(r.value('probe_smtp_deferred'), 1)
  assert.equal(r.value('probe_smtp_status_code'), 450, 'the refusal, not the 250 of the accepted mail')
  assert.match(r.debug, /refused: b@mx\.test/)
})

test('smtp deferred: a greylisted and an unknown recipient is a hard failure with the 550', async (t) => {
  const server = await scriptedServer(
    t,
    perRecipient({ 'a@mx.test': GREYLISTED, 'b@mx.test': '550 5.1.1 <b@mx.test>: User unknown' }),
  )
  const r = await probe(mx('[a@mx.test, b@mx.test, c@mx.test]'), `127.0.0.1:${server.port}`)
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'rcpt', r.debug)
  assert.equal(r.value('probe_smtp_deferred'), 0)
  assert.equal(r.value('probe_smtp_status_code'), 550)
})

test('smtp deferred: every recipient greylisted: deferred 1 with the 450', async (t) => {
  const server = await scriptedServer(t, perRecipient({ 'a@mx.test': GREYLISTED, 'b@mx.test': GREYLISTED }))
  const r = await probe(mx('[a@mx.test, b@mx.test]'), `127.0.0.1:${server.port}`)
  assert.equal(r.failedPhase, 'rcpt', r.debug)
  assert.equal(r.value('probe_smtp_deferred'), 1)
  assert.equal(r.value('probe_smtp_status_code'), 450)
})

for (const [behaviour, data] of [
  ['refuses DATA', { data: '554 5.5.1 Error: no valid recipients' }],
  ['takes DATA anyway', {}],
] as const) {
  test(`smtp deferred: with PIPELINING, a greylisted RCPT fails in rcpt with its 450 (the server ${behaviour})`, async (t) => {
    const { r, server } = await run(
      t,
      { pipelining: true, rcpt: GREYLISTED, ...data },
      mx('a@mx.test', 'pipelining: true'),
    )
    assert.ok(server.received.includes('DATA'), 'DATA was pipelined behind RCPT')
    assert.equal(r.value('probe_success'), 0)
    assert.equal(r.failedPhase, 'rcpt', 'the refused command, not the last one sent')
    assert.equal(r.value('probe_smtp_deferred'), 1, r.debug)
    assert.equal(r.value('probe_smtp_status_code'), 450, 'not the reply to DATA behind it')
  })
}

/** A round trip whose SMTP leg meets `faults`; its receiving leg is a scripted IMAP server. */
async function roundtrip(t: Parameters<typeof scriptedServer>[0], faults: SmtpFaults) {
  const store = new MailStore()
  const imap = await scriptedServer(t, imapScript({ caps: 'IMAP4rev1 AUTH=PLAIN IDLE UIDPLUS', store }))
  const smtp = await scriptedServer(
    t,
    smtpScript({ starttls: false, onMessage: (raw) => store.deliver(raw), ...faults }),
  )
  return probe(roundtripModule(imap.port), `127.0.0.1:${smtp.port}`)
}

test('smtp deferred: a round trip whose send leg is greylisted reports deferred 1 on leg="send"', async (t) => {
  const r = await roundtrip(t, { rcpt: GREYLISTED })
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'send_rcpt', r.debug)
  assert.equal(r.value('probe_smtp_deferred', { leg: 'send' }), 1)
  assert.equal(r.value('probe_smtp_status_code', { leg: 'send' }), 450)
})

test('smtp deferred: a round trip whose send leg gets a 550 reports deferred 0 on leg="send"', async (t) => {
  const r = await roundtrip(t, { rcpt: '550 5.1.1 no such user' })
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'send_rcpt', r.debug)
  assert.equal(r.value('probe_smtp_deferred', { leg: 'send' }), 0)
})

test('smtp deferred: a round trip that delivers reports deferred 0 on leg="send"', async (t) => {
  const r = await roundtrip(t, {})
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_smtp_deferred', { leg: 'send' }), 0)
  assert.equal(r.samples.filter((s) => s.name === 'probe_smtp_deferred').length, 1, 'only the send leg')
})
