// Deferred round-trip state: persisted atomically, each mail counted once even when scrapes overlap, a bad file
// moved aside and counted, pending writes finished on close.
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { test } from 'node:test'
import { Registry } from 'prom-client'
import { recordingLogger } from '../helpers/logger.ts'
import { RoundtripStateFile, RoundtripStates } from '../../src/probers/roundtrip/state.ts'

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

const resets = async (registry: Registry) =>
  (await registry.getSingleMetric('mailprobe_exporter_roundtrip_state_reset_total')?.get())?.values[0]?.value

const BAD_FILES: [string, string, RegExp][] = [
  ['garbage', 'this is not json {', /not JSON/],
  ['an empty file', '', /empty/],
  ['another version', '{"version": 2, "routes": {}}', /version 2, this exporter reads version 1/],
  ['no version', '{"routes": {}}', /version missing/],
  [
    'a wrong shape',
    '{"version": 1, "routes": {"m|mx:25": {"inflight": "a", "lost": 0, "swept": 0}}}',
    /routes\.m\|mx:25\.inflight: .*expected array/,
  ],
  [
    'a negative counter',
    '{"version": 1, "routes": {"k": {"inflight": [], "lost": -1, "swept": 0}}}',
    /routes\.k\.lost/,
  ],
]

for (const [what, text, problem] of BAD_FILES) {
  test(`roundtrip state: ${what} is moved aside, logged, counted, and the state starts afresh`, async () => {
    const file = tempFile()
    mkdirSync(dirname(file), { recursive: true })
    writeFileSync(file, text)
    const registry = new Registry()
    const { logger, lines } = recordingLogger()
    const states = new RoundtripStates({ logger, registry })
    assert.equal(await resets(registry), 0, 'exported from the start')
    const state = states.get(file)
    assert.deepEqual(state.snapshot('m|mx:25'), { inflight: [], lost: 0, swept: 0 })
    const aside = readdirSync(dirname(file)).filter((n) => n.startsWith('state.json.corrupt-'))
    assert.equal(aside.length, 1, readdirSync(dirname(file)).join(' '))
    const stamp = aside[0]?.slice('state.json.corrupt-'.length) ?? ''
    assert.ok(!Number.isNaN(Date.parse(stamp)), `an ISO time: ${stamp}`)
    assert.equal(readFileSync(join(dirname(file), aside[0] ?? ''), 'utf8'), text, 'kept as it was')
    const error = lines.find((l) => l.level === 'error')
    assert.ok(error, 'logged')
    assert.equal(error.attrs['file'], file)
    assert.match(String(error.attrs['problem']), problem)
    assert.equal(await resets(registry), 1)
    // Probes work again: the next write makes a valid file.
    await state.update('m|mx:25', (r) => r.inflight.push({ id: 'a', acceptedAt: 1 }))
    assert.deepEqual(new RoundtripStateFile(file).snapshot('m|mx:25').inflight, [{ id: 'a', acceptedAt: 1 }])
    assert.equal(await resets(registry), 1, 'counted once')
  })
}

test('roundtrip state: a state file that cannot be read (not a missing one) fails the lock at start', () => {
  const file = tempFile()
  mkdirSync(file, { recursive: true }) // a directory where the file should be
  assert.throws(() => new RoundtripStates().lock([file]), /cannot read state file .*state\.json: EISDIR/)
  assert.ok(!existsSync(`${file}.lock`), 'the lock is let go again')
})

test('roundtrip state: writes use a unique temp name (not only the pid), leave none behind, and clean up a crashed one', async () => {
  const file = tempFile()
  mkdirSync(dirname(file), { recursive: true })
  // Another container's exporter (also pid 1) in the middle of a write, by the old naming: in the way.
  mkdirSync(`${file}.${String(process.pid)}.tmp`)
  const state = new RoundtripStateFile(file)
  await state.update('k', (r) => (r.lost = 3))
  await state.update('k', (r) => (r.swept = 4))
  assert.deepEqual(new RoundtripStateFile(file).snapshot('k'), { inflight: [], lost: 3, swept: 4 })
  assert.deepEqual(
    readdirSync(dirname(file)).sort(),
    ['state.json', `state.json.${String(process.pid)}.tmp`],
    'no temp file of ours left',
  )
  // A temp file of a writer that crashed mid-write is removed when the file is locked.
  writeFileSync(`${file}.1.0123456789ab.tmp`, '{"half')
  const states = new RoundtripStates()
  states.lock([file])
  assert.ok(!existsSync(`${file}.1.0123456789ab.tmp`))
  await states.close()
})

test('roundtrip state: close() waits for the pending writes, then refuses new ones', async () => {
  const file = tempFile()
  const states = new RoundtripStates()
  const state = states.get(file)
  const writes = Array.from({ length: 5 }, (_, i) => state.update('k', (r) => (r.lost = i + 1)))
  await states.close()
  assert.equal(new RoundtripStateFile(file).snapshot('k').lost, 5, 'every write is on disk')
  await Promise.all(writes)
  await assert.rejects(
    state.update('k', (r) => (r.lost = 99)),
    /closed/,
  )
  assert.equal(new RoundtripStateFile(file).snapshot('k').lost, 5)
})
