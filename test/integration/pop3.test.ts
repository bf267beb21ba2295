// pop3 prober and client against the project's real Dovecot (STLS on 110, implicit TLS on 995, every mechanism).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { parseConfig, type Module } from '../../src/config.ts'
import { createProbeLogger, silentLogger } from '../../src/logger.ts'
import type { ProbeContext } from '../../src/prober.ts'
import { openPop3, pop3PhaseTimer, recordStat } from '../../src/dialogues/pop3.ts'
import { smtpConversation } from '../../src/dialogues/smtp.ts'
import { MARKER_HEADER, buildMessage } from '../../src/protocol/message.ts'
import { testContext } from '../helpers/context.ts'
import { metricValue } from '../helpers/metrics.ts'
import { probe } from '../helpers/probe.ts'
import { mailStack } from '../helpers/stack.ts'

const stack = mailStack()
const [user, pass] = stack.users.probe
const stls = `127.0.0.1:${stack.ports.pop3}`
const pop3s = `127.0.0.1:${stack.ports.pop3s}`

const pop3Module = (auth: string, tls = 'stls', extra = '') => `
prober: pop3
allowed_targets: [127.0.0.1]
timeout: 8s
pop3:
  tls: ${tls}
  tls_config: { ca_file: ${stack.ca} }
  auth: ${auth}
  ${extra}`
const login = (extra = '') => `{ username: ${user}, password: ${pass}${extra} }`

const DOVECOT_MECHANISMS = ['PLAIN', 'LOGIN', 'CRAM-MD5', 'SCRAM-SHA-1', 'SCRAM-SHA-256', 'USER', 'APOP']

test('pop3 (Dovecot): STLS then SCRAM-SHA-256 succeeds, times every phase and reports the facts', async () => {
  const r = await probe(pop3Module(login(), 'stls', 'list: true'), stls)
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
    'list',
    'quit',
  ])
    assert.ok((r.value('probe_pop3_duration_seconds', { phase }) ?? 0) > 0, `phase ${phase}`)
  assert.equal(
    r.value('probe_pop3_auth_mechanism_used', { mechanism: 'SCRAM-SHA-256' }),
    1,
    'the default choice',
  )
  for (const stage of ['plain', 'tls'])
    for (const mechanism of DOVECOT_MECHANISMS)
      assert.equal(
        r.value('probe_pop3_auth_mechanism_advertised', { stage, mechanism }),
        1,
        `${stage} ${mechanism}`,
      )
  for (const capability of ['USER', 'SASL', 'UIDL', 'TOP', 'PIPELINING', 'RESP-CODES'])
    assert.equal(r.value('probe_pop3_capability_info', { stage: 'tls', capability }), 1, capability)
  assert.equal(r.value('probe_pop3_capability_info', { stage: 'plain', capability: 'STLS' }), 1)
  assert.equal(r.value('probe_pop3_capability_info', { stage: 'tls', capability: 'STLS' }), undefined)
  assert.equal(r.value('probe_pop3_starttls_advertised'), 1)
  // The test stack sets disable_plaintext_auth = no, so Dovecot offers USER and PLAIN in the clear.
  assert.equal(r.value('probe_pop3_auth_offered_before_tls'), 1)
  assert.ok((r.value('probe_pop3_messages') ?? -1) >= 0)
  assert.ok((r.value('probe_pop3_size_bytes') ?? -1) >= 0)
  assert.equal(r.value('probe_tls_version_info', { version: 'TLS 1.3' }), 1)
  assert.ok(r.value('probe_ssl_last_chain_expiry_timestamp_seconds') !== undefined)
  const info = r.samples.find((s) => s.name === 'probe_ssl_last_chain_info')
  assert.equal(info?.labels['subject'], 'O=mailprobe test,CN=mail.test')
  assert.match(r.debug, /C: AUTH SCRAM-SHA-256 <redacted>/)
  assert.doesNotMatch(r.debug, new RegExp(pass))
})

test('pop3 (Dovecot): implicit TLS on 995 succeeds without STLS, capabilities at stage tls', async () => {
  const r = await probe(pop3Module(login(), 'implicit'), pop3s)
  assert.equal(r.value('probe_success'), 1, r.debug)
  for (const phase of ['connect', 'tls', 'banner', 'capa', 'auth', 'stat', 'quit'])
    assert.ok((r.value('probe_pop3_duration_seconds', { phase }) ?? 0) > 0, `phase ${phase}`)
  for (const phase of ['stls', 'capa_tls', 'list'])
    assert.equal(r.value('probe_pop3_duration_seconds', { phase }), 0, `phase ${phase} not reached`)
  assert.equal(r.value('probe_pop3_capability_info', { stage: 'tls', capability: 'SASL' }), 1)
  assert.equal(r.value('probe_pop3_capability_info', { stage: 'plain', capability: 'SASL' }), undefined)
  assert.equal(r.value('probe_pop3_starttls_advertised'), undefined)
  assert.equal(r.value('probe_pop3_auth_mechanism_used', { mechanism: 'SCRAM-SHA-256' }), 1)
})

for (const mechanism of DOVECOT_MECHANISMS) {
  test(`pop3 (Dovecot): ${mechanism} logs in when it is the configured mechanism`, async () => {
    const r = await probe(pop3Module(login(`, mechanisms: [${mechanism}]`)), stls)
    assert.equal(r.value('probe_success'), 1, r.debug)
    assert.equal(r.value('probe_pop3_auth_mechanism_used', { mechanism }), 1)
    assert.doesNotMatch(r.debug, new RegExp(pass))
  })
}

test('pop3 (Dovecot): a wrong password fails in phase auth with Dovecot text, inside the deadline', async () => {
  const r = await probe(pop3Module(`{ username: ${user}, password: wrong }`), stls)
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'auth')
  assert.match(r.debug, /-ERR \[AUTH\] Authentication failed/)
  assert.ok(r.seconds < 8, `took ${r.seconds}s`)
})

test('pop3 (Dovecot): a user that does not exist fails in phase auth', async () => {
  const r = await probe(
    pop3Module('{ username: nobody@mail.test, password: whatever, mechanisms: [USER] }'),
    stls,
  )
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'auth')
  assert.match(r.debug, /-ERR \[AUTH\]/)
})

test('pop3 (Dovecot): without the stack CA the certificate does not verify: phase tls, no credentials sent', async () => {
  const r = await probe(pop3Module(login()).replace(`tls_config: { ca_file: ${stack.ca} }`, ''), stls)
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'tls')
  assert.match(r.debug, /certificate verification failed/)
  assert.doesNotMatch(r.debug, /C: (AUTH|USER|APOP)/)
  assert.ok((r.value('probe_ssl_earliest_cert_expiry') ?? 0) > 0, 'certificate facts are still reported')
})

test('pop3 (Dovecot): tls: none logs in only with allow_plaintext', async () => {
  // Without allow_plaintext the config itself is refused: no probe could ever log in.
  await assert.rejects(
    probe(pop3Module(login(), 'none'), stls),
    /tls: none would send the password in the clear/,
  )
  const allowed = await probe(pop3Module(login(', allow_plaintext: true'), 'none'), stls)
  assert.equal(allowed.value('probe_success'), 1, allowed.debug)
  assert.equal(allowed.value('probe_tls_version_info'), undefined)
})

/** A ProbeContext and parsed module for calling the probers' building blocks directly. */
function context(yaml: string): { ctx: ProbeContext; module: Module; log: () => string } {
  const body = yaml
    .trim()
    .split('\n')
    .map((l) => '    ' + l)
    .join('\n')
  const module = parseConfig(`modules:\n  m:\n${body}\n`, 'test.yml').modules['m']!
  const { logger, transcript } = createProbeLogger(silentLogger, {})
  const ctx: ProbeContext = testContext(15_000, { logger, moduleName: 'm' })
  return { ctx, module, log: () => transcript.lines().join('\n') }
}

test('pop3 (Dovecot): openPop3 finds a delivered mail with TOP, RETR unstuffs its dots, DELE and QUIT remove it', async () => {
  const [alice, alicePass] = stack.users.alice
  // Send a marked mail to alice through the real Postfix, with body lines that must be dot-stuffed on the wire.
  const smtp = context(`
prober: smtp
smtp:
  tls: starttls
  tls_config: { ca_file: ${stack.ca} }`)
  assert.equal(smtp.module.prober, 'smtp')
  const message = buildMessage({
    from: 'monitor@example.org',
    to: [alice],
    subject: 'pop3-integration',
    headers: {},
    body: 'first line\n.leading dot\n..two dots\n.\nlast line\n',
  })
  await smtpConversation({ host: '127.0.0.1', port: stack.ports.smtp }, smtp.module.smtp, smtp.ctx, {
    mail: { from: 'monitor@example.org', to: [alice], message },
  })

  const receive = context(pop3Module(`{ username: ${alice}, password: ${alicePass} }`))
  assert.equal(receive.module.prober, 'pop3')
  const { ctx } = receive
  const settings = receive.module.pop3
  const target = { host: '127.0.0.1', port: stack.ports.pop3 }
  const labels = { leg: 'receive' }
  // One timer for every reconnect, as the round trip polls: the phases add up instead of starting over.
  const phase = pop3PhaseTimer(ctx, labels)

  // The maildrop is a snapshot taken at login, so poll by reconnecting until the mail is there.
  let found: number | undefined
  let sessions = 0
  while (found === undefined && sessions < 50) {
    sessions++
    const { client } = await openPop3(target, settings, ctx, labels, phase)
    try {
      const stat = await client.stat()
      recordStat(ctx, stat, labels)
      const { messages } = stat
      // Newest first: the mail just sent is at the end.
      for (let id = messages; id >= 1 && id > messages - 20 && found === undefined; id--) {
        const header = await client.top(id, 0)
        if (header.includes(`${MARKER_HEADER}: ${message.id}`)) found = id
      }
      if (found !== undefined) {
        const text = await client.retr(found)
        assert.match(text, /\r\n\r\nfirst line\r\n\.leading dot\r\n\.\.two dots\r\n\.\r\nlast line/)
        await client.dele(found)
      }
      await client.quit()
    } finally {
      client.close()
    }
    if (found === undefined) await new Promise((r) => setTimeout(r, 100))
  }
  assert.ok(found !== undefined, `mail ${message.id} reached alice's maildrop`)
  const auth = await metricValue(ctx.registry, 'probe_pop3_duration_seconds', {
    leg: 'receive',
    phase: 'auth',
  })
  assert.ok((auth ?? 0) > 0)
  assert.ok(((await metricValue(ctx.registry, 'probe_pop3_messages', labels)) ?? 0) >= 1)
  assert.equal(await metricValue(ctx.registry, 'probe_pop3_auth_mechanism_used', { leg: 'receive' }), 1)
  assert.equal(
    await metricValue(ctx.registry, 'probe_tls_version_info', { leg: 'receive', version: 'TLS 1.3' }),
    1,
  )
  assert.match(receive.log(), /S: \+OK Logging out, messages deleted\./)

  // QUIT committed the DELE: a new session no longer has the mail.
  const { client } = await openPop3(target, settings, ctx, labels, phase)
  try {
    const uids = await client.uidl()
    for (let id = uids.length; id >= 1 && id > uids.length - 20; id--)
      assert.doesNotMatch(await client.top(id, 0), new RegExp(message.id))
    await client.quit()
  } finally {
    client.close()
  }
})
