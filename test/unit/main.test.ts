// The exporter process: flags, listening, reload by SIGHUP and POST /-/reload (a bad config keeps the old one).
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { parseMetrics, sampleValue } from '../helpers/metrics.ts'

const GOOD = 'modules:\n  one:\n    prober: smtp\n'
const BETTER = 'modules:\n  one:\n    prober: smtp\n  two:\n    prober: smtp\n'

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

async function startExporter(t: TestContext, configFile: string, extra: string[] = []) {
  const port = await freePort()
  // node --import tsx: one process, so signals reach the exporter itself (npx and tsx would sit in between).
  const child: ChildProcess = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'src/main.ts',
      `--config.file=${configFile}`,
      `--web.listen-address=127.0.0.1:${port}`,
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let log = ''
  child.stderr?.on('data', (d: Buffer) => (log += d.toString()))
  t.after(() => child.kill('SIGTERM'))
  const base = `http://127.0.0.1:${port}`
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(base + '/-/healthy')).ok) return { base, child, log: () => log }
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`exporter did not start: ${log}`)
}

async function reloadGauge(base: string) {
  const samples = parseMetrics(await (await fetch(base + '/metrics')).text())
  return sampleValue(samples, 'mailprobe_exporter_config_last_reload_successful')
}

test('main: SIGHUP and POST /-/reload load a new config; a bad one keeps the old and sets the gauge to 0', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mailprobe-main-'))
  const file = join(dir, 'config.yml')
  writeFileSync(file, GOOD)
  const { base, child, log } = await startExporter(t, file, ['--log.format=json'])
  assert.equal(await reloadGauge(base), 1)

  writeFileSync(file, 'modules:\n  one:\n    prober: smtp\n    bogus: 1\n')
  const failed = await fetch(base + '/-/reload', { method: 'POST' })
  assert.equal(failed.status, 500)
  assert.match(await failed.text(), /config\.yml:4:5: modules\.one\.bogus: unknown key "bogus"/)
  assert.equal(await reloadGauge(base), 0)
  assert.match(await (await fetch(base + '/config')).text(), /one:/, 'old config still served')
  assert.equal(
    (await fetch(base + '/probe?module=one&target=127.0.0.1:1')).status,
    200,
    'old modules still probe',
  )

  writeFileSync(file, BETTER)
  child.kill('SIGHUP')
  for (let i = 0; i < 50 && (await reloadGauge(base)) !== 1; i++) await new Promise((r) => setTimeout(r, 100))
  assert.equal(await reloadGauge(base), 1)
  assert.match(await (await fetch(base + '/config')).text(), /two:/)
  const line = log()
    .split('\n')
    .find((l) => l.includes('error reloading config'))
  assert.ok(line, 'the failed reload was logged')
  assert.equal((JSON.parse(line) as { level: string }).level, 'error')
})

test('main: bad flags exit 2 with usage; --version prints the version', () => {
  const bad = spawnSync('npx', ['tsx', 'src/main.ts', '--web.listen-address=nonsense'], { encoding: 'utf8' })
  assert.equal(bad.status, 2)
  assert.match(bad.stderr, /--web.listen-address must be \[host\]:port/)
  assert.match(bad.stderr, /usage: mailprobe_exporter/)
  const unknown = spawnSync('npx', ['tsx', 'src/main.ts', '--no-such-flag'], { encoding: 'utf8' })
  assert.equal(unknown.status, 2)
  const version = spawnSync('npx', ['tsx', 'src/main.ts', '--version'], { encoding: 'utf8' })
  assert.match(version.stdout, /^mailprobe_exporter \d+\.\d+\.\d+ \(node v20/)
})

test('main: probe failures are logged as one logfmt line with module, target and phase', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mailprobe-main-'))
  const file = join(dir, 'config.yml')
  writeFileSync(file, GOOD)
  const { base, log } = await startExporter(t, file)
  await fetch(base + '/probe?module=one&target=127.0.0.1:1')
  await new Promise((r) => setTimeout(r, 100))
  const lines = log()
    .split('\n')
    .filter((l) => l.includes('probe failed'))
  assert.equal(lines.length, 1)
  assert.match(
    lines[0] ?? '',
    /level=warn msg="probe failed" module=one target=127\.0\.0\.1:1 phase=connect /,
  )
})
