// Deferred round-trip state: persisted atomically, each mail counted once even when scrapes overlap.
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { RoundtripStateFile, RoundtripStates } from '../../src/roundtrip-state.ts'

const tempFile = () => join(mkdtempSync(join(tmpdir(), 'mailprobe-state-')), 'sub', 'state.json')

test('roundtrip state: in-flight mails survive a restart (a new object reading the same file)', async () => {
  const file = tempFile()
  const first = new RoundtripStateFile(file)
  await first.update('m|mx:25', (r) => r.inflight.push({ id: 'a', acceptedAt: 1000 }))
  await first.update('m|mx:25', (r) => (r.lost += 2))
  const restarted = new RoundtripStateFile(file)
  assert.deepEqual(restarted.snapshot('m|mx:25'), {
    inflight: [{ id: 'a', acceptedAt: 1000 }],
    lost: 2,
    swept: 0,
  })
  assert.deepEqual(restarted.snapshot('other'), { inflight: [], lost: 0, swept: 0 })
  assert.match(readFileSync(file, 'utf8'), /"version": 1/)
})

test('roundtrip state: two overlapping scrapes that both found the same mail count it once', async () => {
  const state = new RoundtripStateFile(tempFile())
  await state.update('k', (r) => r.inflight.push({ id: 'a', acceptedAt: 1 }, { id: 'b', acceptedAt: 2 }))
  const snapshotA = state.snapshot('k')
  const snapshotB = state.snapshot('k')
  const settle = (found: string[]) =>
    state.update('k', (r) => {
      const mine = r.inflight.filter((m) => found.includes(m.id))
      r.inflight = r.inflight.filter((m) => !found.includes(m.id))
      return mine.map((m) => m.id)
    })
  const [a, b] = await Promise.all([
    settle(snapshotA.inflight.map((m) => m.id)),
    settle(snapshotB.inflight.map((m) => m.id)),
  ])
  assert.deepEqual([...a, ...b].sort(), ['a', 'b'], 'each mail settled by exactly one scrape')
  assert.deepEqual(state.snapshot('k').inflight, [])
})

test('roundtrip state: one object per file, a failing change does not block later ones', async () => {
  const states = new RoundtripStates()
  const file = tempFile()
  assert.equal(states.get(file), states.get(file))
  assert.equal(
    states.get(file),
    states.get(file.replace(/\/state\.json$/, '/./state.json')),
    'however the path is spelled',
  )
  const state = states.get(file)
  await assert.rejects(
    state.update('k', () => {
      throw new Error('boom')
    }),
    /boom/,
  )
  assert.equal(await state.update('k', (r) => r.inflight.length), 0)
})
