// The HTTP surface through real HTTP: /probe's 400/403 answers, deadline header, content types, debug, /metrics, /config.
import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { parseConfig } from '../../src/config.ts'
import { createExporterMetrics } from '../../src/exporter-metrics.ts'
import { History } from '../../src/history.ts'
import { IntervalGate, ProbeSlots } from '../../src/limits.ts'
import { silentLogger } from '../../src/logger.ts'
import { ProberStates } from '../../src/probers/index.ts'
import { startExporter } from '../helpers/exporter.ts'
import { scriptedServer, silentServer } from '../servers/scripted.ts'
import { parseMetrics, sampleValue } from '../helpers/metrics.ts'

const start = startExporter

/** An SMTP server that answers a minimal dialogue (no TLS). */
function okSmtp(t: TestContext) {
  return scriptedServer(t, async (c) => {
    c.line('220 mx.test ESMTP')
    await c.expect('EHLO')
    c.line('250-mx.test\r\n250 AUTH PLAIN')
    for (;;) {
      const line = await c.expect()
      if (line.startsWith('AUTH')) c.line('235 ok')
      if (line === 'QUIT') {
        c.line('221 bye')
        c.close()
        return
      }
    }
  })
}

const CONFIG = `
modules:
  plain:
    prober: smtp
    timeout: 5s
    smtp: { tls: none }
  secured:
    prober: smtp
    allowed_targets: [127.0.0.1]
    smtp:
      tls: none
      auth: { username: probe, password: hunter2-very-secret, allow_plaintext: true }
  fixed:
    prober: smtp
    target: 127.0.0.1:1
    smtp:
      tls: none
      auth: { username: probe, password: hunter2-very-secret, allow_plaintext: true }
`

test('server: /probe says what is wrong with a bad request (400, 405 for HEAD)', async (t) => {
  const { get, base } = await start(t, CONFIG)
  const cases: [string, RegExp][] = [
    ['/probe?target=x', /module parameter is missing/],
    ['/probe?module=plain&module=secured&target=x', /module parameter must be given once/],
    ['/probe?module=nope&target=x', /unknown module "nope" \(known: plain, secured, fixed\)/],
    ['/probe?module=constructor&target=x', /unknown module "constructor"/],
    ['/probe?module=__proto__&target=x', /unknown module "__proto__"/],
    ['/probe?module=plain', /target parameter is missing/],
    ['/probe?module=plain&target=mx.test:99999', /invalid target: "mx.test:99999" .*port must be 1-65535/],
    // Exactly host, host:port, [ipv6], [ipv6]:port: anything else is refused, not guessed.
    ['/probe?module=plain&target=%0Amx.test', /invalid target: "\\nmx.test"/],
    ['/probe?module=plain&target=mx.test%0A', /invalid target: "mx.test\\n"/],
    ['/probe?module=plain&target=::1:2999', /invalid target: .*IPv6 addresses go in brackets/],
    ['/probe?module=plain&target=[127.0.0.1]:25', /invalid target: .*brackets are for IPv6/],
    ['/probe?module=plain&target=[fe80::1%25lo]:25', /invalid target: .*zone id/],
  ]
  for (const [path, message] of cases) {
    const res = await get(path)
    assert.equal(res.status, 400, path)
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/)
    assert.match(await res.text(), message, path)
  }
  const head = await fetch(`${base}/probe?module=plain&target=127.0.0.1:1`, { method: 'HEAD' })
  assert.equal(head.status, 405)
  assert.equal(head.headers.get('allow'), 'GET')
  const bad = await get('/probe?module=plain&target=127.0.0.1:1', {
    'X-Prometheus-Scrape-Timeout-Seconds': 'soon',
  })
  assert.equal(bad.status, 400)
  assert.match(await bad.text(), /X-Prometheus-Scrape-Timeout-Seconds must be a positive number/)

  // Every refusal is counted by its reason; reasons not seen yet are exported at 0.
  const samples = parseMetrics(await (await get('/metrics')).text())
  const rejected = (reason: string) =>
    sampleValue(samples, 'mailprobe_exporter_probe_requests_rejected_total', { reason })
  assert.equal(rejected('missing_module'), 1)
  assert.equal(rejected('bad_parameter'), 1)
  assert.equal(rejected('unknown_module'), 3)
  assert.equal(rejected('missing_target'), 1)
  assert.equal(rejected('invalid_target'), 6)
  assert.equal(rejected('method_not_allowed'), 1)
  assert.equal(rejected('bad_scrape_timeout'), 1)
  assert.equal(rejected('rate_limited'), 0)
})

test('server: a target outside allowed_targets gets 403 before any connection', async (t) => {
  const smtp = await okSmtp(t)
  const { get } = await start(
    t,
    CONFIG.replace('allowed_targets: [127.0.0.1]', 'allowed_targets: [mail.example.com]'),
  )
  const res = await get(`/probe?module=secured&target=127.0.0.1:${smtp.port}`)
  assert.equal(res.status, 403)
  assert.match(await res.text(), /not in allowed_targets of module secured/)
  assert.equal(smtp.connections, 0)
})

test('server: a module with a fixed target refuses others and uses its own when target is omitted', async (t) => {
  const smtp = await okSmtp(t)
  const { get, setConfig } = await start(t, CONFIG)
  const other = await get('/probe?module=fixed&target=mail.example.com')
  assert.equal(other.status, 403)
  assert.match(await other.text(), /only probes its configured target/)
  setConfig(parseConfig(CONFIG.replace('127.0.0.1:1', `127.0.0.1:${smtp.port}`), 'test.yml'))
  const res = await get('/probe?module=fixed')
  assert.equal(res.status, 200)
  assert.equal(sampleValue(parseMetrics(await res.text()), 'probe_success'), 1)
})

test('server: the deadline is the scrape timeout minus the offset, capped by the module timeout', async (t) => {
  const silent = await silentServer(t)
  const { get } = await start(t, CONFIG)
  const started = performance.now()
  const res = await get(`/probe?module=plain&target=127.0.0.1:${silent.port}`, {
    'X-Prometheus-Scrape-Timeout-Seconds': '1.5',
  })
  const elapsed = (performance.now() - started) / 1000
  const samples = parseMetrics(await res.text())
  assert.equal(sampleValue(samples, 'probe_timeout_seconds'), 1)
  assert.equal(sampleValue(samples, 'probe_success'), 0)
  assert.equal(sampleValue(samples, 'probe_failed_phase_info', { phase: 'banner' }), 1)
  assert.ok(elapsed < 1.5, `answered within the scrape timeout (${elapsed}s)`)
  const capped = await get(`/probe?module=plain&target=127.0.0.1:1`, {
    'X-Prometheus-Scrape-Timeout-Seconds': '60',
  })
  assert.equal(sampleValue(parseMetrics(await capped.text()), 'probe_timeout_seconds'), 5)
})

test('server: text format by default, OpenMetrics when the scraper asks for it', async (t) => {
  const smtp = await okSmtp(t)
  const { get } = await start(t, CONFIG)
  const text = await get(`/probe?module=plain&target=127.0.0.1:${smtp.port}`)
  assert.equal(text.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8')
  const om = await get(`/probe?module=plain&target=127.0.0.1:${smtp.port}`, {
    Accept: 'application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5',
  })
  assert.equal(om.headers.get('content-type'), 'application/openmetrics-text; version=1.0.0; charset=utf-8')
  assert.match(await om.text(), /probe_success 1\n[\s\S]*# EOF\n$/)
})

test('server: ?debug=true shows the transcript, metrics and module with secrets hidden', async (t) => {
  const smtp = await okSmtp(t)
  const { get } = await start(t, CONFIG)
  const res = await get(`/probe?module=secured&target=127.0.0.1:${smtp.port}&debug=true`)
  const body = await res.text()
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain/)
  assert.match(body, /^Logs for the probe:/)
  assert.match(body, /S: 220 mx\.test ESMTP/)
  assert.match(body, /C: AUTH PLAIN <redacted>/)
  assert.match(body, /Metrics that would have been returned:\n[\s\S]*probe_success 1/)
  assert.match(body, /Module configuration:\n[\s\S]*password: <secret>/)
  assert.doesNotMatch(body, /hunter2/)
})

test('server: /metrics counts probes by module and result and unknown modules', async (t) => {
  const smtp = await okSmtp(t)
  const { get } = await start(t, CONFIG)
  await get(`/probe?module=plain&target=127.0.0.1:${smtp.port}`)
  await get(`/probe?module=plain&target=127.0.0.1:1`)
  await get(`/probe?module=nope&target=x`)
  const res = await get('/metrics')
  assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8')
  const samples = parseMetrics(await res.text())
  assert.equal(
    sampleValue(samples, 'mailprobe_exporter_probes_total', { module: 'plain', result: 'success' }),
    1,
  )
  assert.equal(
    sampleValue(samples, 'mailprobe_exporter_probes_total', { module: 'plain', result: 'failure' }),
    1,
  )
  assert.equal(sampleValue(samples, 'mailprobe_exporter_module_unknown_total'), 1)
  assert.equal(
    sampleValue(samples, 'mailprobe_exporter_probe_duration_seconds_count', { module: 'plain' }),
    2,
  )
  assert.equal(sampleValue(samples, 'mailprobe_exporter_build_info', { version: '9.9.9' }), 1)
  assert.ok(sampleValue(samples, 'process_resident_memory_bytes') !== undefined)
})

test('server: /config shows the modules with secrets redacted; health endpoints answer', async (t) => {
  const { get } = await start(t, CONFIG)
  const config = await (await get('/config')).text()
  assert.match(config, /secured:\n\s+prober: smtp/)
  assert.match(config, /password: <secret>/)
  assert.doesNotMatch(config, /hunter2/)
  assert.equal(await (await get('/-/healthy')).text(), 'Healthy\n')
  assert.equal(await (await get('/-/ready')).text(), 'Ready\n')
  assert.equal((await get('/nothing')).status, 404)
  assert.equal((await get('/logs?id=12345')).status, 404)
})

test('server: finished probes are garbage: 300 probes retain (almost) no heap', async (t) => {
  // Each probe's listeners used to hang on an AbortSignal.timeout until it fired, keeping the probe's
  // sockets, session and registry alive for the whole deadline: at scrape rates, heap exhaustion.
  const { getHeapSpaceStatistics, setFlagsFromString } = await import('node:v8')
  const { runInNewContext } = await import('node:vm')
  const { EventEmitter } = await import('node:events')
  const { handleProbe } = await import('../../src/handler.ts')
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const smtp = await okSmtp(t)
  const config = parseConfig(CONFIG, 'test.yml')
  const deps = {
    logger: silentLogger,
    history: new History(0, 0),
    metrics: createExporterMetrics('t'),
    timeoutOffset: 0.5,
    states: new ProberStates(),
  }
  const client = new AbortController()
  const once = async () => {
    const answer = await handleProbe(
      {
        moduleName: 'plain',
        module: config.modules['plain']!,
        target: `127.0.0.1:${smtp.port}`,
        scrapeTimeout: undefined,
        debug: false,
        openMetrics: false,
        clientSignal: client.signal,
      },
      deps,
    )
    assert.match(answer.body, /probe_success 1/)
  }
  // The heap outside the code spaces: compiled code grows as V8 optimises the hot paths (more on Node 24).
  const kept = () =>
    getHeapSpaceStatistics()
      .filter((s) => !s.space_name.startsWith('code'))
      .reduce((sum, s) => sum + s.space_used_size, 0)
  for (let i = 0; i < 20; i++) await once() // warm-up: code, caches
  gc()
  const before = kept()
  for (let i = 0; i < 300; i++) await once()
  gc()
  const retainedKiB = (kept() - before) / 1024
  assert.ok(retainedKiB < 1500, `300 finished probes retain ${retainedKiB.toFixed(0)} KiB`)
  assert.equal(
    EventEmitter.getEventListeners(client.signal, 'abort').length,
    0,
    'no listener left on the client signal',
  )
})

test('server: min_interval refuses a second probe of the same module and target with 429 and Retry-After', async (t) => {
  const { get } = await start(
    t,
    'modules:\n  limited:\n    prober: smtp\n    timeout: 2s\n    min_interval: 30s\n    smtp: { tls: none }\n',
    { gate: new IntervalGate() },
  )
  assert.equal((await get('/probe?module=limited&target=127.0.0.1:1')).status, 200)
  const again = await get('/probe?module=limited&target=127.0.0.1:1')
  assert.equal(again.status, 429)
  const retry = Number(again.headers.get('retry-after'))
  assert.ok(retry >= 29 && retry <= 30, `Retry-After ${retry}`)
  assert.match(await again.text(), /at most once every 30s \(min_interval\)/)
  assert.equal(
    (await get('/probe?module=limited&target=127.0.0.1:2')).status,
    200,
    'another target is not held up',
  )
  const samples = parseMetrics(await (await get('/metrics')).text())
  assert.equal(
    sampleValue(samples, 'mailprobe_exporter_probe_requests_rejected_total', { reason: 'rate_limited' }),
    1,
  )
})

test('server: with --probe.max-concurrent, an excess probe waits inside its deadline, then gets 503', async (t) => {
  const silent = await silentServer(t)
  const { get } = await start(
    t,
    'modules:\n  slow:\n    prober: smtp\n    timeout: 1s\n    smtp: { tls: none }\n',
    { slots: new ProbeSlots(1) },
  )
  const first = get(`/probe?module=slow&target=127.0.0.1:${silent.port}`)
  await new Promise((resolve) => setTimeout(resolve, 100))
  const gauge = sampleValue(
    parseMetrics(await (await get('/metrics')).text()),
    'mailprobe_exporter_probes_in_flight',
  )
  assert.equal(gauge, 1, 'one probe in flight')
  const started = performance.now()
  // 0.8 s scrape timeout minus the 0.5 s offset: 0.3 s to wait for the one slot, which stays taken.
  const second = await get(`/probe?module=slow&target=127.0.0.1:${silent.port}`, {
    'X-Prometheus-Scrape-Timeout-Seconds': '0.8',
  })
  const waited = (performance.now() - started) / 1000
  assert.equal(second.status, 503)
  assert.match(await second.text(), /too many probes in flight \(--probe.max-concurrent=1\)/)
  assert.ok(waited >= 0.25 && waited < 0.6, `answered after ${waited.toFixed(2)} s`)
  assert.equal((await first).status, 200)
  assert.equal(silent.connections, 1, 'the refused probe never connected')
  const after = await get(`/probe?module=slow&target=127.0.0.1:1`)
  assert.equal(after.status, 200, 'the slot is free again')
  const samples = parseMetrics(await (await get('/metrics')).text())
  assert.equal(sampleValue(samples, 'mailprobe_exporter_probes_in_flight'), 0)
  assert.equal(
    sampleValue(samples, 'mailprobe_exporter_probe_requests_rejected_total', { reason: 'overloaded' }),
    1,
  )
})
