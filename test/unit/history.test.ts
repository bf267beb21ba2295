// History: bounded, newest first, failures kept longer than successes.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { History } from '../../src/history.ts'

const record = (success: boolean, module: string) => ({
  time: new Date(),
  module,
  target: 't',
  success,
  durationSeconds: 0.1,
  failedPhase: success ? undefined : 'banner',
  debugText: () => module,
  debugBytes: module.length,
})

test('history: keeps the newest N successes and a longer list of failures, newest first', () => {
  const history = new History(2, 3)
  history.add(record(false, 'f1'))
  for (let i = 1; i <= 5; i++) history.add(record(true, `s${i}`))
  history.add(record(false, 'f2'))
  assert.deepEqual(
    history.list().map((r) => r.module),
    ['f2', 's5', 's4', 'f1'],
  )
  const oldFailure = history.list().find((r) => r.module === 'f1')
  assert.equal(
    history.get(oldFailure?.id ?? -1)?.debugText(),
    'f1',
    'an old failure outlives newer successes',
  )
  for (let i = 3; i <= 5; i++) history.add(record(false, `f${i}`))
  assert.equal(history.list().filter((r) => !r.success).length, 3)
  assert.equal(history.get(oldFailure?.id ?? -1), undefined)
})

test('history: the debug texts kept are bounded in bytes; the oldest successes go first', () => {
  const history = new History(50, 200, 1000)
  const big = (success: boolean, module: string) => ({
    ...record(success, module),
    debugBytes: 300,
  })
  history.add(big(false, 'f1'))
  history.add(big(true, 's1'))
  history.add(big(true, 's2'))
  history.add(big(false, 'f2')) // 1200 bytes: s1 goes
  assert.deepEqual(
    history.list().map((r) => r.module),
    ['f2', 's2', 'f1'],
  )
  history.add(big(false, 'f3')) // s2 goes; failures stay while successes can go
  assert.deepEqual(
    history.list().map((r) => r.module),
    ['f3', 'f2', 'f1'],
  )
  history.add(big(false, 'f4')) // then the oldest failure
  assert.deepEqual(
    history.list().map((r) => r.module),
    ['f4', 'f3', 'f2'],
  )
})
