// The exporter process: flags, listening, reload by SIGHUP and POST /-/reload (a bad config keeps the old one).
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { parseMetrics, sampleValue } from '../helpers/metrics.ts'
import { startExporter } from '../helpers/prometheus.ts'

const GOOD = 'modules:\n  one:\n    prober: smtp\n'
const BETTER = 'modules:\n  one:\n    prober: smtp\n  two:\n    prober: smtp\n'

/** The exporter from source on a free port, stopped when the test ends. */
async function exporter(t: TestContext, configFile: string, extra: string[] = []) {
  const daemon = await startExporter(configFile, extra)
  t.after(() => daemon.stop())
  return { base: daemon.url, daemon, log: () => daemon.lines().join('\n') }
}

async function reloadGauge(base: string) {
  const samples = parseMetrics(await (await fetch(base + '/metrics')).text())
  return sampleValue(samples, 'mailprobe_exporter_config_last_reload_successful')
}

test('main: SIGHUP and POST /-/reload load a new config; a bad one keeps the old and sets the gauge to 0', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mailprobe-main-'))
  const file = join(dir, 'config.yml')
  writeFileSync(file, GOOD)
  const { base, daemon, log } = await exporter(t, file, ['--log.format=json'])
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
  daemon.kill('SIGHUP')
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
  assert.match(version.stdout, /^mailprobe_exporter \d+\.\d+\.\d+ \(node v\d+\.\d+\.\d+\)$/m)
})

test('main: probe failures are logged as one logfmt line with module, target and phase', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mailprobe-main-'))
  const file = join(dir, 'config.yml')
  writeFileSync(file, GOOD)
  const { base, log } = await exporter(t, file)
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
