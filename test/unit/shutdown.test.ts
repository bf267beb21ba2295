// SIGTERM: the exporter stops accepting, lets the probes in flight answer within their deadline, and exits 0.
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { scriptedServer } from '../servers/scripted.ts'
import { startExporter } from '../helpers/prometheus.ts'
import { parseMetrics, sampleValue } from '../helpers/metrics.ts'

test('shutdown: SIGTERM lets five probes in flight answer, refuses new ones, and exits 0', async (t) => {
  // A slow but healthy SMTP server: the banner comes after 700 ms.
  const smtp = await scriptedServer(t, async (c) => {
    await new Promise((resolve) => setTimeout(resolve, 700))
    c.line('220 mx.test ESMTP')
    await c.expect('EHLO')
    c.line('250 mx.test')
    await c.expect('QUIT')
    c.line('221 bye')
    c.close()
  })
  const dir = mkdtempSync(join(tmpdir(), 'mailprobe-shutdown-'))
  const file = join(dir, 'config.yml')
  writeFileSync(file, 'modules:\n  slow:\n    prober: smtp\n    timeout: 5s\n    smtp: { tls: none }\n')
  const daemon = await startExporter(file)
  t.after(() => daemon.stop())
  const url = `${daemon.url}/probe?module=slow&target=127.0.0.1:${smtp.port}`
  const probes = Array.from({ length: 5 }, () =>
    fetch(url).then(async (res) => ({ status: res.status, body: await res.text() })),
  )
  await new Promise((resolve) => setTimeout(resolve, 300)) // all five are talking to the server now
  daemon.kill('SIGTERM')
  await new Promise((resolve) => setTimeout(resolve, 100))
  await assert.rejects(fetch(url, { signal: AbortSignal.timeout(2000) }), 'a new connection is refused')
  const answers = await Promise.all(probes)
  for (const answer of answers) {
    assert.equal(answer.status, 200)
    assert.equal(sampleValue(parseMetrics(answer.body), 'probe_success'), 1, answer.body)
  }
  assert.equal(await daemon.exitCode(), 0)
  const log = daemon.lines().join('\n')
  assert.match(log, /shutting down: waiting for the probes in flight/)
  assert.match(log, /msg=stopped/)
})
