// roundtrip prober against the real Postfix + Dovecot: SMTP -> IMAP/POP3, deferred mode, lost mail, Junk,
// and the promise that no mail but our own is ever deleted.
import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { RoundtripStates } from '../../src/probers/roundtrip/state.ts'
import { appendMail, listMail } from '../helpers/mailbox.ts'
import { parseMetrics, sampleValue } from '../helpers/metrics.ts'
import { probe } from '../helpers/probe.ts'
import { startExporter } from '../helpers/prometheus.ts'
import { mailStack } from '../helpers/stack.ts'

const stack = mailStack()

interface Route {
  user?: [string, string]
  to?: string
  receive?: 'imap' | 'imaps' | 'pop3' | 'pop3s'
  smtpTls?: 'starttls' | 'implicit'
  extra?: string
  headers?: string
  timeout?: string
}

/** A round-trip module: submission (or 465) as the probe's user, to a mailbox read back over IMAP or POP3. */
function route(r: Route = {}): string {
  const [user, pass] = r.user ?? stack.users.probe
  const receive = r.receive ?? 'imap'
  const protocol = receive.startsWith('imap') ? 'imap' : 'pop3'
  const port = stack.ports[receive]
  const tls = receive.endsWith('s') ? 'implicit' : protocol === 'imap' ? 'starttls' : 'stls'
  return `
prober: roundtrip
timeout: ${r.timeout ?? '10s'}
allowed_targets: [127.0.0.1]
roundtrip:
  smtp:
    tls: ${r.smtpTls ?? 'starttls'}
    tls_config: { ca_file: ${stack.ca} }
    auth: { username: ${user}, password: ${pass} }
    send:
      from: ${user}
      to: ${r.to ?? user}
      headers: { ${r.headers ?? ''} }
  receive:
    protocol: ${protocol}
    target: 127.0.0.1:${port}
    ${protocol}:
      tls: ${tls}
      tls_config: { ca_file: ${stack.ca} }
      auth: { username: ${user}, password: ${pass} }
  ${r.extra ?? ''}`
}

const submission = `127.0.0.1:${stack.ports.submission}`
const idOf = (debug: string) => /message_id=<([^@]+)@/.exec(debug)?.[1]

/** Waits until a mail with this id is in the user's inbox (scrapes of a deferred module are far apart in real life). */
async function delivered(id: string | undefined, user = stack.users.probe) {
  assert.ok(id)
  for (let i = 0; i < 50; i++) {
    if ((await listMail(user)).some((m) => m.source.includes(id))) return
    await new Promise((r) => setTimeout(r, 100))
  }
  assert.fail(`mail ${id} was not delivered`)
}

for (const receive of ['imap', 'imaps', 'pop3', 'pop3s'] as const) {
  test(`roundtrip (real stack): submission -> ${receive} finds the mail, times delivery and deletes exactly it`, async () => {
    const before = await listMail(stack.users.probe)
    const r = await probe(route({ receive }), submission)
    assert.equal(r.value('probe_success'), 1, r.debug)
    assert.equal(r.value('probe_roundtrip_found'), 1)
    assert.equal(r.value('probe_roundtrip_found_in_junk'), 0)
    const delivery = r.value('probe_roundtrip_delivery_seconds') ?? -1
    assert.ok(delivery > 0 && delivery < 5, `delivery ${delivery}s`)
    assert.ok((r.value('probe_roundtrip_arrival_seconds') ?? -1) >= 0)
    assert.ok((r.value('probe_roundtrip_detection_lag_seconds') ?? -1) >= 0)
    for (const phase of ['send', 'detect', 'fetch', 'cleanup'])
      assert.ok((r.value('probe_roundtrip_duration_seconds', { phase }) ?? 0) > 0, `phase ${phase}`)
    // Each leg keeps its own per-command phases and TLS facts, labelled by leg.
    assert.ok((r.value('probe_smtp_duration_seconds', { leg: 'send', phase: 'auth' }) ?? 0) > 0)
    const receiveMetric = receive.startsWith('imap')
      ? 'probe_imap_duration_seconds'
      : 'probe_pop3_duration_seconds'
    assert.ok((r.value(receiveMetric, { leg: 'receive', phase: 'auth' }) ?? 0) > 0)
    assert.equal(r.value('probe_tls_version_info', { leg: 'send', version: 'TLS 1.3' }), 1)
    assert.equal(r.value('probe_tls_version_info', { leg: 'receive', version: 'TLS 1.3' }), 1)
    assert.ok(r.value('probe_roundtrip_mailbox_messages') !== undefined)
    const id = idOf(r.debug)
    assert.ok(id)
    const after = await listMail(stack.users.probe)
    assert.ok(!after.some((m) => m.source.includes(id)), 'our mail is gone')
    assert.deepEqual(
      after.map((m) => m.uid),
      before.map((m) => m.uid),
      'nothing else was touched',
    )
  })
}

test('roundtrip (real stack): implicit TLS on both legs (465 -> 993)', async () => {
  const r = await probe(route({ receive: 'imaps', smtpTls: 'implicit' }), `127.0.0.1:${stack.ports.smtps}`)
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_smtp_duration_seconds', { leg: 'send', phase: 'starttls' }), 0)
  assert.ok((r.value('probe_smtp_duration_seconds', { leg: 'send', phase: 'tls' }) ?? 0) > 0)
})

test('roundtrip (real stack): a mail the server files into Junk (Sieve) is found there and reported', async () => {
  const r = await probe(route({ headers: '"X-Spam-Flag": "YES"' }), submission)
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_roundtrip_found_in_junk'), 1)
  const id = idOf(r.debug)
  assert.ok(id)
  assert.ok(
    !(await listMail(stack.users.probe, 'Junk')).some((m) => m.source.includes(id)),
    'deleted from Junk too',
  )
})

test('roundtrip (real stack): deferred mode reports pending first, finds it next scrape, survives a restart', async () => {
  const stateFile = join(mkdtempSync(join(tmpdir(), 'mailprobe-rt-')), 'state.json')
  const module = route({ extra: `mode: deferred\n  state_file: ${stateFile}` })
  const states = new RoundtripStates()
  const first = await probe(module, submission, { roundtripStates: states, moduleName: 'deferred_a' })
  assert.equal(first.value('probe_success'), 1, first.debug)
  assert.equal(first.value('probe_roundtrip_pending'), 1)
  assert.equal(first.value('probe_roundtrip_found'), 0)
  const firstId = idOf(first.debug)
  assert.match(readFileSync(stateFile, 'utf8'), new RegExp(firstId ?? 'missing'))
  await delivered(firstId)

  // A new state object reads the same file: an exporter restart. From here on the restarted one is used.
  const restarted = new RoundtripStates()
  const second = await probe(module, submission, { roundtripStates: restarted, moduleName: 'deferred_a' })
  assert.equal(second.value('probe_success'), 1, second.debug)
  assert.equal(second.value('probe_roundtrip_found'), 1)
  assert.equal(second.value('probe_roundtrip_pending'), 1, 'the next mail is in flight')
  assert.ok((second.value('probe_roundtrip_delivery_seconds') ?? -1) >= 0)
  assert.ok(!(await listMail(stack.users.probe)).some((m) => m.source.includes(firstId ?? '?')))
  await delivered(idOf(second.debug))
  const third = await probe(module, submission, { roundtripStates: restarted, moduleName: 'deferred_a' })
  assert.equal(third.value('probe_roundtrip_found'), 1, third.debug)
  assert.equal(third.value('probe_roundtrip_lost_total'), 0)
})

test('roundtrip (real stack): two overlapping scrapes of a deferred module settle each mail exactly once', async () => {
  const stateFile = join(mkdtempSync(join(tmpdir(), 'mailprobe-rt-')), 'state.json')
  const module = route({ extra: `mode: deferred\n  state_file: ${stateFile}` })
  const states = new RoundtripStates()
  const first = await probe(module, submission, { roundtripStates: states, moduleName: 'overlap' })
  await delivered(idOf(first.debug))
  // Two scrapes at once (e.g. two Prometheus servers): both see the same in-flight mail.
  const [a, b] = await Promise.all([
    probe(module, submission, { roundtripStates: states, moduleName: 'overlap' }),
    probe(module, submission, { roundtripStates: states, moduleName: 'overlap' }),
  ])
  assert.equal(a.value('probe_success'), 1, a.debug)
  assert.equal(b.value('probe_success'), 1, b.debug)
  const state = JSON.parse(readFileSync(stateFile, 'utf8')) as {
    routes: Record<string, { inflight: { id: string }[]; lost: number }>
  }
  const route_ = Object.values(state.routes)[0]
  assert.ok(route_)
  assert.equal(route_.lost, 0, 'a mail found by one scrape is not lost for the other')
  assert.deepEqual(
    route_.inflight.map((m) => m.id).sort(),
    [idOf(a.debug), idOf(b.debug)].sort(),
    'exactly the two new mails are in flight; the first one is settled',
  )
  assert.ok(!(await listMail(stack.users.probe)).some((m) => m.source.includes(idOf(first.debug) ?? '?')))
  // Collect what is left so the mailbox stays clean.
  await delivered(idOf(a.debug))
  await delivered(idOf(b.debug))
  const last = await probe(module, submission, { roundtripStates: states, moduleName: 'overlap' })
  assert.equal(last.value('probe_roundtrip_pending'), 1, last.debug)
})

test('roundtrip (real stack): a mail that never arrives is counted as lost after lost_after', async () => {
  const stateFile = join(mkdtempSync(join(tmpdir(), 'mailprobe-rt-')), 'state.json')
  // Postfix accepts mail for void@ and discards it: the probe's mailbox never gets it.
  const module = route({
    to: stack.voidAddress,
    extra: `mode: deferred\n  state_file: ${stateFile}\n  lost_after: 1s`,
  })
  const first = await probe(module, submission, { moduleName: 'lost_route' })
  assert.equal(first.value('probe_success'), 1, first.debug)
  assert.equal(first.value('probe_roundtrip_pending'), 1)
  await new Promise((r) => setTimeout(r, 1200))
  const second = await probe(module, submission, { moduleName: 'lost_route' })
  assert.equal(second.value('probe_success'), 0)
  assert.equal(second.failedPhase, 'detect')
  assert.equal(second.value('probe_roundtrip_lost_total'), 1)
  assert.equal(second.value('probe_roundtrip_pending'), 1, 'the next mail was still sent')
  assert.match(second.debug, /1 mail\(s\) not found within lost_after/)
})

test('roundtrip (real stack): a failing leg is named in the failed phase (send_auth, receive_auth)', async () => {
  const module = route()
  // The first auth block is the SMTP leg's, the second the mailbox's.
  const wrongSmtp = module.replace('password: probe-secret', 'password: wrong-password')
  const send = await probe(wrongSmtp, submission, { moduleName: 'legs' })
  assert.equal(send.value('probe_success'), 0)
  assert.equal(send.failedPhase, 'send_auth', send.debug)
  assert.equal(send.value('probe_smtp_status_code', { leg: 'send' }), 535)
  const wrongMailbox = module.replace(
    /(receive:[\s\S]*?)password: probe-secret/,
    '$1password: wrong-password',
  )
  const receive = await probe(wrongMailbox, submission, { moduleName: 'legs' })
  assert.equal(receive.failedPhase, 'receive_auth', receive.debug)
  assert.doesNotMatch(receive.debug, /test mail accepted/, 'no mail is sent when the mailbox cannot be read')
})

test('roundtrip (real stack): sync mode fails in phase detect when the mail does not arrive in time', async () => {
  const r = await probe(
    route({ to: stack.voidAddress, timeout: '3s', extra: 'cleanup_reserve: 1s' }),
    submission,
  )
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'detect')
  assert.equal(r.value('probe_roundtrip_found'), 0)
  assert.ok(r.seconds < 3, `answered within the deadline (${r.seconds}s)`)
})

/** Flags that belong to the mail (\\Recent belongs to a session, RFC 3501 2.3.2). */
const flags = (list: string[]) => list.filter((f) => f !== '\\Recent').sort()

const userMail = (subject: string) =>
  [
    'From: friend@example.org',
    'To: spam@mail.test',
    `Subject: ${subject}`,
    `Message-ID: <${subject.replace(/\W/g, '')}@example.org>`,
    '',
    'a user mail that must survive',
    '',
  ].join('\r\n')

test("roundtrip (real stack): many round trips and sweeps never touch a user's own mail", async () => {
  const user = stack.users.spam
  // The user's own mail: one flagged \Deleted, one whose subject contains "probe", one seen.
  await appendMail(user, userMail('quarterly report'), [])
  await appendMail(user, userMail('old thing'), ['\\Deleted'])
  await appendMail(user, userMail('probe results from the lab'), ['\\Seen'])
  // A stale probe mail of this module: the sweep must remove it (and count it).
  const stale = [
    'From: spam@mail.test',
    'To: spam@mail.test',
    'Subject: mailprobe test stale',
    'X-Mailprobe-Id: stale-0001',
    'X-Mailprobe-Module: safety',
    `X-Mailprobe-Sent: ${Date.now() - 7200_000}`,
    '',
    'stale',
    '',
  ].join('\r\n')
  await appendMail(user, stale)
  // Another module's in-flight mail, sent just now: not ours to sweep.
  await appendMail(
    user,
    stale
      .replace('stale-0001', 'other-0001')
      .replace('Module: safety', 'Module: other')
      .replace(/Sent: \d+/, `Sent: ${Date.now()}`),
  )
  const before = await listMail(user)
  const own = before.filter((m) => !m.source.includes('X-Mailprobe-Id: stale-0001'))

  let swept = 0
  const states = new RoundtripStates() // one exporter: the swept counter adds up across scrapes
  for (const receive of ['imap', 'pop3', 'imap', 'pop3s', 'imaps', 'imap'] as const) {
    const r = await probe(route({ user, receive, extra: 'sweep_after: 1h' }), submission, {
      moduleName: 'safety',
      roundtripStates: states,
    })
    assert.equal(r.value('probe_success'), 1, r.debug)
    swept = r.value('probe_roundtrip_swept_total') ?? swept
  }
  assert.equal(swept, 1, 'the stale probe mail was swept once')
  const after = await listMail(user)
  assert.deepEqual(
    after.map((m) => [m.uid, m.subject, flags(m.flags)]),
    own.map((m) => [m.uid, m.subject, flags(m.flags)]),
    "every user mail (and the other module's mail) is still there, flags unchanged",
  )
  assert.ok(
    after.some((m) => m.flags.includes('\\Deleted')),
    'the \\Deleted user mail was not expunged',
  )
})

test("roundtrip (real stack): two modules sharing a mailbox do not delete each other's in-flight mail", async () => {
  const stateFile = join(mkdtempSync(join(tmpdir(), 'mailprobe-rt-')), 'state.json')
  const states = new RoundtripStates()
  const deferredModule = route({
    extra: `mode: deferred\n  state_file: ${stateFile}\n  lost_after: 1ms\n  sweep_after: 1ms`,
  })
  const first = await probe(deferredModule, submission, { roundtripStates: states, moduleName: 'shared_a' })
  assert.equal(first.value('probe_roundtrip_pending'), 1, first.debug)
  await delivered(idOf(first.debug))
  // Module B sweeps everything of its own older than 1 ms, several times, while A's mail waits in the inbox.
  for (let i = 0; i < 3; i++) {
    const b = await probe(route({ extra: 'sweep_after: 1ms' }), submission, {
      roundtripStates: states,
      moduleName: 'shared_b',
    })
    assert.equal(b.value('probe_success'), 1, b.debug)
  }
  const second = await probe(deferredModule, submission, { roundtripStates: states, moduleName: 'shared_a' })
  assert.equal(second.value('probe_roundtrip_found'), 1, "A's mail was still there for A")
})

test('roundtrip (real stack): an exporter whose deferred state file is garbage moves it aside, says so on /metrics, and probes', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mailprobe-rt-'))
  const stateFile = join(dir, 'state.json')
  const garbage = '{"version": 1, "routes": {"x": \u0000 truncated'
  writeFileSync(stateFile, garbage)
  const body = route({ extra: `mode: deferred\n  state_file: ${stateFile}` })
    .replace(/^\n+/, '')
    .split('\n')
    .map((l) => '    ' + l)
    .join('\n')
  const configFile = join(dir, 'config.yml')
  // min_interval off: the second scrape follows the first at once.
  writeFileSync(configFile, `modules:\n  corrupt_state:\n    min_interval: 0s\n${body}\n`)
  const exporter = await startExporter(configFile)
  t.after(() => exporter.stop())

  // Checked at start: moved aside, logged with the file and the problem, counted.
  const aside = readdirSync(dir).filter((n) => n.startsWith('state.json.corrupt-'))
  assert.equal(aside.length, 1, readdirSync(dir).join(' '))
  assert.equal(readFileSync(join(dir, aside[0] ?? ''), 'utf8'), garbage)
  const logged = exporter.lines().find((l) => l.includes('round-trip state file is invalid'))
  assert.ok(logged, exporter.output())
  assert.ok(logged.includes(stateFile) && /not JSON/.test(logged), logged)
  const resets = async () =>
    sampleValue(
      parseMetrics(await (await fetch(`${exporter.url}/metrics`)).text()),
      'mailprobe_exporter_roundtrip_state_reset_total',
    )
  assert.equal(await resets(), 1)

  const scrape = async () => {
    const res = await fetch(`${exporter.url}/probe?module=corrupt_state&target=${submission}`)
    const samples = parseMetrics(await res.text())
    return (name: string) => sampleValue(samples, name)
  }
  const first = await scrape()
  assert.equal(first('probe_success'), 1, exporter.output())
  assert.equal(first('probe_roundtrip_pending'), 1)
  const state = JSON.parse(readFileSync(stateFile, 'utf8')) as {
    version: number
    routes: Record<string, { inflight: { id: string }[] }>
  }
  assert.equal(state.version, 1, 'a valid state file again')
  const id = Object.values(state.routes)[0]?.inflight[0]?.id
  await delivered(id)
  const second = await scrape()
  assert.equal(second('probe_roundtrip_found'), 1, exporter.output())
  assert.equal(second('probe_roundtrip_lost_total'), 0)
  assert.equal(await resets(), 1, 'counted once')
})
