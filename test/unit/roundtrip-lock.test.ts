// The state file lock: one exporter per state file, across processes and containers sharing a volume (all
// pid 1, different hostnames), taken over from a holder that crashed (no heartbeat, or its pid gone).
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { parseMetrics, sampleValue } from '../helpers/metrics.ts'
import { startExporter } from '../helpers/prometheus.ts'
import { recordingLogger } from '../helpers/logger.ts'
import { RoundtripStates, StateLockedError } from '../../src/probers/roundtrip/state.ts'

const tempFile = () => join(mkdtempSync(join(tmpdir(), 'mailprobe-lock-')), 'state.json')
const pidns = () => readlinkSync('/proc/self/ns/pid')

interface LockFile {
  token: string
  hostname: string
  pid: number
  pidns: string
  since: string
}
const readLock = (file: string) => JSON.parse(readFileSync(`${file}.lock`, 'utf8')) as LockFile

/** A lock file as another exporter left it; `ageMs`: how long ago its last heartbeat was. */
function foreignLock(file: string, holder: Partial<LockFile>, ageMs = 0) {
  mkdirSync(dirname(file), { recursive: true })
  const info = {
    token: 'f'.repeat(32),
    hostname: 'other-container',
    pid: 1,
    pidns: 'pid:[4026532000]',
    since: '2024-01-01T00:00:00.000Z',
    ...holder,
  }
  writeFileSync(`${file}.lock`, JSON.stringify(info))
  const at = new Date(Date.now() - ageMs)
  utimesSync(`${file}.lock`, at, at)
}

/** A pid that just exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', ''])
  assert.ok(child.pid)
  return child.pid
}

function states(t: TestContext, options: ConstructorParameters<typeof RoundtripStates>[0] = {}) {
  const s = new RoundtripStates(options)
  t.after(() => s.close())
  return s
}

test('lock: a second holder of the same state file is refused, naming the file and the holder; close() lets go', async (t) => {
  const file = tempFile()
  const first = new RoundtripStates()
  first.lock([file])
  const info = readLock(file)
  assert.equal(info.hostname, hostname())
  assert.equal(info.pid, process.pid)
  assert.equal(info.pidns, pidns())
  assert.match(info.token, /^[0-9a-f]{32}$/)
  first.lock([file]) // again by the same holder (a reload): nothing happens

  const second = states(t)
  let refusal: unknown
  try {
    second.lock([file])
  } catch (err) {
    refusal = err
  }
  assert.ok(refusal instanceof StateLockedError, String(refusal))
  assert.equal(refusal.file, file)
  assert.match(
    refusal.message,
    new RegExp(
      `state file ${file} is in use by another exporter \\(host ${hostname()}, pid ${String(process.pid)}, since .*, heartbeat [\\d.]+s ago\\)`,
    ),
  )
  await first.close()
  assert.ok(!existsSync(`${file}.lock`), 'released')
  second.lock([file])
  assert.notEqual(readLock(file).token, info.token)
})

test('lock: another container (other hostname, also pid 1) with a fresh heartbeat holds it; a stale heartbeat is taken over', (t) => {
  const file = tempFile()
  foreignLock(file, {}, 1000)
  assert.throws(() => states(t).lock([file]), /in use by another exporter \(host other-container, pid 1, /)
  assert.equal(readLock(file).hostname, 'other-container', 'left alone')

  foreignLock(file, {}, 31_000) // the default: stale after 30 s without a heartbeat
  const { logger, lines } = recordingLogger()
  states(t, { logger }).lock([file])
  assert.equal(readLock(file).pid, process.pid)
  const warning = lines.find((l) => l.level === 'warn')
  assert.match(String(warning?.attrs['reason']), /no heartbeat for 31s/)
  assert.match(String(warning?.attrs['holder']), /host other-container, pid 1/)
})

test('lock: on the same host and pid namespace, a holder whose pid is gone is taken over at once; a live one is not', async (t) => {
  const file = tempFile()
  foreignLock(file, { hostname: hostname(), pidns: pidns(), pid: deadPid() })
  states(t).lock([file])
  assert.equal(readLock(file).pid, process.pid)

  const other = tempFile()
  const alive = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'])
  t.after(() => alive.kill())
  assert.ok(alive.pid)
  foreignLock(other, { hostname: hostname(), pidns: pidns(), pid: alive.pid })
  assert.throws(() => states(t).lock([other]), StateLockedError)

  // The same hostname in another pid namespace (containers on the host network): its pid says nothing here.
  const third = tempFile()
  foreignLock(third, { hostname: hostname(), pidns: 'pid:[1]', pid: deadPid() })
  assert.throws(() => states(t).lock([third]), StateLockedError)
  await Promise.resolve()
})

test('lock: an unreadable lock file is held while its mtime is fresh, and taken over when it is old', (t) => {
  const file = tempFile()
  mkdirSync(dirname(file), { recursive: true })
  writeFileSync(`${file}.lock`, 'garbage')
  assert.throws(() => states(t).lock([file]), /an unknown holder \(unreadable lock file/)
  const old = new Date(Date.now() - 60_000)
  utimesSync(`${file}.lock`, old, old)
  states(t).lock([file])
  assert.equal(readLock(file).pid, process.pid)
})

test('lock: the holder refreshes its heartbeat, and a lock taken from it stops its writes with an error', async (t) => {
  const file = tempFile()
  const { logger, lines } = recordingLogger()
  const mine = states(t, { logger, timing: { heartbeatMs: 20 } })
  mine.lock([file])
  const old = new Date(Date.now() - 20_000)
  utimesSync(`${file}.lock`, old, old)
  await new Promise((r) => setTimeout(r, 100))
  assert.ok(Date.now() - statSync(`${file}.lock`).mtimeMs < 1000, 'the heartbeat moved the mtime')

  // Presumed dead by another exporter (e.g. this one was frozen for longer than the stale time).
  foreignLock(file, { token: 'e'.repeat(32) })
  await new Promise((r) => setTimeout(r, 100))
  const error = lines.find((l) => l.level === 'error')
  assert.match(error?.msg ?? '', /lost the lock/)
  assert.match(String(error?.attrs['err']), /taken over by host other-container pid 1/)
  await assert.rejects(
    mine.get(file).update('k', (r) => (r.lost = 1)),
    /another exporter took its lock/,
  )
  await mine.close()
  assert.equal(readLock(file).token, 'e'.repeat(32), "close() leaves the other exporter's lock alone")
})

test('lock: when one of several files is held elsewhere, the ones this call took are released again', (t) => {
  const free = tempFile()
  const held = tempFile()
  foreignLock(held, {})
  assert.throws(() => states(t).lock([free, held]), StateLockedError)
  assert.ok(!existsSync(`${free}.lock`))
})

/** A config whose one deferred module uses `stateFile` (no probe runs: the lock is taken at start). */
function deferredConfig(stateFile: string) {
  const file = join(dirname(stateFile), 'config.yml')
  writeFileSync(
    file,
    `modules:
  rt:
    prober: roundtrip
    allowed_targets: [127.0.0.1]
    roundtrip:
      mode: deferred
      state_file: ${stateFile}
      smtp:
        tls: none
        send: { from: probe@mx.test, to: probe@mx.test }
      receive:
        protocol: imap
        target: 127.0.0.1:1
        imap:
          tls: none
          auth: { username: probe@mx.test, password: pw, allow_plaintext: true }
`,
  )
  return file
}

test('lock: a second exporter on the same state file fails at start naming the file and the holder; a crashed holder is taken over', async (t) => {
  const stateFile = tempFile()
  mkdirSync(dirname(stateFile), { recursive: true })
  const config = deferredConfig(stateFile)
  const first = await startExporter(config)
  t.after(() => first.stop())
  const holder = readLock(stateFile)
  assert.notEqual(holder.pid, process.pid, 'the exporter process holds it')
  const metrics = parseMetrics(await (await fetch(`${first.url}/metrics`)).text())
  assert.equal(sampleValue(metrics, 'mailprobe_exporter_roundtrip_state_reset_total'), 0)

  await assert.rejects(startExporter(config), (err: Error) => {
    assert.match(err.message, /the process exited/)
    assert.match(err.message, /cannot start/)
    assert.ok(err.message.includes(`state file ${stateFile} is in use by another exporter`), err.message)
    assert.ok(err.message.includes(`host ${hostname()}, pid ${String(holder.pid)}`), err.message)
    return true
  })
  assert.equal(readLock(stateFile).token, holder.token, 'the first one still holds it')

  first.kill('SIGKILL') // a crash: the lock file stays, its pid is gone
  await first.stop()
  assert.ok(existsSync(`${stateFile}.lock`))
  const third = await startExporter(config)
  t.after(() => third.stop())
  assert.notEqual(readLock(stateFile).token, holder.token, 'taken over at once')
})
