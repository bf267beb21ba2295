// Phases: one ProbePhases per probe times and names every phase; a leg's phases carry the leg's name.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Registry } from 'prom-client'
import { PhaseError } from '../../src/errors.ts'
import { phaseMetric } from '../../src/metrics.ts'
import { ProbePhases } from '../../src/phases.ts'
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
