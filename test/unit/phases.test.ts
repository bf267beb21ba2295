// Phases: one ProbePhases per probe times and names every phase; a leg's phases carry the leg's name.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Registry } from 'prom-client'
import { PhaseError } from '../../src/errors.ts'
import { phaseMetric } from '../../src/metrics.ts'
import { MAX_STEPS, ProbePhases } from '../../src/phases.ts'
import { parseMetrics, sampleValue } from '../helpers/metrics.ts'

const failure = async (promise: Promise<unknown>) => {
  try {
    await promise
  } catch (err) {
    assert.ok(err instanceof PhaseError, String(err))
    return err.phase
  }
  assert.fail('no failure')
}

test('phases: a timer exports every phase, adds repeats up, and names a failure by its phase', async () => {
  const registry = new Registry()
  const phases = new ProbePhases(registry)
  const phase = phases.timer(phaseMetric('smtp', ['connect', 'ehlo', 'quit'], true))
  await phase('connect', () => new Promise((r) => setTimeout(r, 20)))
  phase.add('ehlo', 0.25)
  phase.add('ehlo', 0.25)
  assert.equal(phases.current, 'connect')
  assert.equal(await failure(phase('quit', () => Promise.reject(new Error('gone')))), 'quit')
  assert.equal(phases.current, 'quit')
  const samples = parseMetrics(await registry.metrics())
  const value = (p: string) => sampleValue(samples, 'probe_smtp_duration_seconds', { phase: p })
  assert.ok((value('connect') ?? 0) >= 0.015)
  assert.equal(value('ehlo'), 0.5)
  assert.notEqual(value('quit'), undefined, 'a failed phase is still timed')
})

test('phases: a leg names its phases <leg>_<phase> in failures and in current, and labels its gauge', async () => {
  const registry = new Registry()
  const phases = new ProbePhases(registry)
  const trip = phases.timer(phaseMetric('roundtrip', ['send', 'detect'], false))
  const send = phases.timer(phaseMetric('smtp', ['auth', 'data'], true), 'send')
  // The leg's failure keeps its name through the round trip's own phase.
  assert.equal(
    await failure(trip('send', () => send('auth', () => Promise.reject(new Error('535'))))),
    'send_auth',
  )
  // A session that follows its own commands enters phases; a failure outside a timed step is named by it.
  send.enter('data')
  assert.equal(phases.current, 'send_data')
  assert.equal(await failure(send.named(undefined, () => Promise.reject(new Error('x')))), 'send_data')
  assert.equal(send.error('auth', new Error('y')).phase, 'send_auth')
  await trip('detect', () => Promise.resolve())
  assert.equal(phases.current, 'detect', "the round trip's own phases have no prefix")
  const samples = parseMetrics(await registry.metrics())
  assert.notEqual(
    sampleValue(samples, 'probe_smtp_duration_seconds', { phase: 'auth', leg: 'send' }),
    undefined,
  )
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

test('phases: steps are recorded in order with increasing starts; an add() lies at the end of the step before', async () => {
  const phases = new ProbePhases(new Registry())
  const smtp = phases.timer(phaseMetric('smtp', ['connect', 'banner', 'ehlo'], true))
  const send = phases.timer(phaseMetric('smtp', ['auth'], true), 'send')
  await sleep(5)
  await smtp('connect', () => sleep(20))
  // As a session reports them: each duration once it is over.
  await sleep(30)
  smtp.add('banner', 0.025)
  await sleep(15)
  smtp.add('ehlo', 0.01)
  await assert.rejects(send('auth', () => Promise.reject(new Error('535'))))
  const steps = phases.steps()
  assert.deepEqual(
    steps.map((s) => [s.name, s.phase, s.leg, s.metric]),
    [
      ['connect', 'connect', undefined, 'probe_smtp_duration_seconds'],
      ['banner', 'banner', undefined, 'probe_smtp_duration_seconds'],
      ['ehlo', 'ehlo', undefined, 'probe_smtp_duration_seconds'],
      ['send_auth', 'auth', 'send', 'probe_smtp_duration_seconds'],
    ],
  )
  const [connect, banner, ehlo, auth] = steps
  assert.ok(connect && banner && ehlo && auth)
  assert.ok(connect.start >= 4, `connect starts after the 5 ms sleep (${connect.start})`)
  assert.ok(connect.seconds >= 0.015, `connect took ~20 ms (${connect.seconds})`)
  assert.equal(banner.start, connect.start + connect.seconds * 1000, 'banner follows connect')
  assert.equal(banner.seconds, 0.025)
  assert.equal(ehlo.start, banner.start + 25, 'ehlo follows banner')
  assert.ok(auth.start >= connect.start + connect.seconds * 1000, 'the timed auth starts after connect ended')
  for (let i = 1; i < steps.length; i++)
    assert.ok(
      steps[i]!.start >= steps[i - 1]!.start,
      `starts increase (${steps.map((s) => s.start).join(', ')})`,
    )
  assert.ok(!('leg' in connect), 'no leg key on a step without a leg')
  // steps() is a copy: changing it changes nothing.
  ;(steps as PhaseStepArray).length = 0
  assert.equal(phases.steps().length, 4)
})

type PhaseStepArray = { length: number }

test('phases: an add() never ends after it was made: replies to pipelined commands overlap', async () => {
  const phases = new ProbePhases(new Registry())
  const smtp = phases.timer(phaseMetric('smtp', ['connect', 'mail', 'rcpt', 'data'], true))
  await smtp('connect', () => Promise.resolve())
  const connected = performance.now()
  await sleep(25) // MAIL, RCPT and DATA sent at once; their replies come together 20+ ms later
  for (const phase of ['mail', 'rcpt', 'data'] as const) smtp.add(phase, 0.02)
  const reported = performance.now() - connected
  const [connect, mail, rcpt, data] = phases.steps()
  assert.ok(connect && mail && rcpt && data)
  const connectEnd = connect.start + connect.seconds * 1000
  for (const s of [mail, rcpt, data]) {
    assert.ok(s.start >= connectEnd - 1e-6, 'not before the step before')
    assert.ok(s.start + s.seconds * 1000 <= connectEnd + reported + 0.5, `${s.name} ends by its report`)
  }
  assert.ok(rcpt.start < mail.start + mail.seconds * 1000, 'rcpt overlaps mail')
})

test('phases: a step nested in another begins after it; a step still running has its time so far', async () => {
  const phases = new ProbePhases(new Registry())
  const trip = phases.timer(phaseMetric('roundtrip', ['send', 'detect'], false))
  const leg = phases.timer(phaseMetric('smtp', ['connect', 'banner'], true), 'send')
  await trip('send', async () => {
    await leg('connect', () => sleep(5))
    leg.add('banner', 0.002)
  })
  let running = trip('detect', () => sleep(30))
  await sleep(10)
  const steps = phases.steps()
  assert.deepEqual(
    steps.map((s) => s.name),
    ['send', 'send_connect', 'send_banner', 'detect'],
  )
  const [send, connect, , detect] = steps
  assert.ok(send && connect && detect)
  assert.ok(connect.start >= send.start)
  assert.ok(send.start + send.seconds * 1000 >= connect.start + connect.seconds * 1000, 'send spans its leg')
  assert.ok(detect.seconds >= 0.005 && detect.seconds < 0.03, `running for ~10 ms (${detect.seconds})`)
  await running
  running = Promise.resolve()
  assert.ok(phases.steps()[3]!.seconds >= 0.025)
})

test(`phases: at most ${MAX_STEPS} steps are kept and the rest counted as dropped; the gauge still adds all`, async () => {
  const registry = new Registry()
  const phases = new ProbePhases(registry)
  const phase = phases.timer(phaseMetric('pop3', ['stat'], true))
  for (let i = 0; i < MAX_STEPS + 44; i++) phase.add('stat', 0.001)
  await phase('stat', () => Promise.resolve())
  assert.equal(phases.steps().length, MAX_STEPS)
  assert.equal(phases.dropped, 45)
  const value = sampleValue(parseMetrics(await registry.metrics()), 'probe_pop3_duration_seconds', {
    phase: 'stat',
  })
  assert.ok(Math.abs((value ?? 0) - 0.3) < 0.01, `the gauge has every step (${value})`)
})

test("phases: absorb() appends a sub-probe's steps with its host, moved onto this probe's clock", async () => {
  const outer = new ProbePhases(new Registry())
  const own = outer.timer(phaseMetric('mx', ['lookup'], false))
  await own('lookup', () => sleep(5))
  await sleep(20)
  const sub = new ProbePhases(new Registry())
  const smtp = sub.timer(phaseMetric('smtp', ['connect', 'banner'], true))
  await smtp('connect', () => sleep(5))
  await sleep(5)
  smtp.add('banner', 0.004)
  const before = sub.steps()
  outer.absorb(sub, 'mx1.example.com')
  await sleep(5)
  own.add('lookup', 0.001)
  const steps = outer.steps()
  assert.deepEqual(
    steps.map((s) => [s.host, s.name]),
    [
      [undefined, 'lookup'],
      ['mx1.example.com', 'connect'],
      ['mx1.example.com', 'banner'],
      [undefined, 'lookup'],
    ],
  )
  const shift = steps[1]!.start - before[0]!.start
  assert.ok(shift >= 24, `shifted by the ~25 ms between the two creations (${shift})`)
  assert.ok(Math.abs(steps[2]!.start - before[1]!.start - shift) < 1e-6, 'every step by the same shift')
  assert.equal(steps[2]!.seconds, 0.004)
  const bannerEnd = steps[2]!.start + steps[2]!.seconds * 1000
  assert.ok(Math.abs(steps[3]!.start - bannerEnd) < 1e-6, 'a later add() follows the absorbed steps')
  assert.equal(sub.steps()[0]!.host, undefined, 'the sub-probe is unchanged')
})
