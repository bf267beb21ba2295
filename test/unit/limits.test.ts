// ProbeSlots (first come, first served; a waiter gives up when its signal aborts) and IntervalGate (bounded).
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { readFileSync } from 'node:fs'
import { IntervalGate, ProbeSlots } from '../../src/limits.ts'
import { REJECT_REASONS } from '../../src/rejections.ts'

test('slots: at most max run; waiters are served in order; an aborted waiter leaves the queue', async () => {
  const slots = new ProbeSlots(1)
  const never = new AbortController().signal
  const first = await slots.acquire(never)
  assert.ok(first)
  const order: string[] = []
  const giveUp = new AbortController()
  const b = slots.acquire(never).then((r) => (order.push('b'), r))
  const c = slots.acquire(giveUp.signal).then((r) => (order.push(r ? 'c' : 'c gave up'), r))
  const d = slots.acquire(never).then((r) => (order.push('d'), r))
  assert.equal(slots.waiting, 3)
  giveUp.abort()
  await c
  assert.equal(slots.waiting, 2)
  first()
  first() // releasing twice frees one slot only
  const rb = await b
  assert.equal(slots.running, 1)
  assert.ok(rb)
  rb()
  const rd = await d
  assert.ok(rd)
  assert.deepEqual(order, ['c gave up', 'b', 'd'])
  rd()
  assert.equal(slots.running, 0)
})

test('gate: one start per key and interval; 0 means no limit; forget() undoes a start', () => {
  const gate = new IntervalGate()
  assert.equal(gate.admit('a', 10, 1000), undefined)
  assert.equal(gate.admit('a', 10, 4000), 7)
  assert.equal(gate.admit('b', 10, 4000), undefined)
  assert.equal(gate.admit('a', 10, 11_000), undefined)
  assert.equal(gate.admit('z', 0, 11_000), undefined)
  assert.equal(gate.admit('z', 0, 11_000), undefined)
  gate.forget('a', 11_000)
  assert.equal(gate.admit('a', 10, 11_001), undefined)
})

test('gate: memory is bounded: expired entries go, and at most maxEntries are kept', () => {
  const gate = new IntervalGate(100)
  for (let i = 0; i < 10_000; i++) gate.admit(`t${i}`, 60, 1000 + i)
  assert.equal(gate.size, 100)
  gate.admit('late', 1, 1_000_000)
  assert.equal(gate.size, 1, 'expired entries were dropped')
})

test('rejections: every reason is in the metric contract grafana/metrics.json', () => {
  const contract = JSON.parse(readFileSync('grafana/metrics.json', 'utf8')) as {
    metrics: Record<string, { values?: Record<string, string[]> }>
  }
  const entry = contract.metrics['mailprobe_exporter_probe_requests_rejected_total']
  assert.deepEqual(entry?.values?.['reason'], [...REJECT_REASONS])
})
