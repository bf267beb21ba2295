// The landing page in a real browser (Debian's chromium, headless, driven by playwright-core).
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { test, type TestContext } from 'node:test'
import { chromium } from 'playwright-core'
import { parseConfig } from '../../src/config.ts'
import { createExporterMetrics } from '../../src/exporter-metrics.ts'
import { History, type ProbeRecord } from '../../src/history.ts'
import { landingPage, probeDetailsPage } from '../../src/landing.ts'
import { silentLogger } from '../../src/logger.ts'
import type { PhaseStep } from '../../src/phases.ts'
import { ProberStates } from '../../src/probers/index.ts'
import { createApp } from '../../src/server.ts'
import { FAILED_COLOUR, waterfallSvg } from '../../src/waterfall.ts'
import { scriptedServer } from '../servers/scripted.ts'

const CHROMIUM = '/usr/bin/chromium'

test('landing page: shows version, modules and recent probes; a failure links to its debug log', async (t) => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is required (apt-get install chromium)`)
  const smtp = await scriptedServer(t, async (c) => {
    c.line('220 mx.test ESMTP')
    await c.expect('EHLO')
    c.line('250 mx.test')
    await c.expect('QUIT')
    c.line('221 bye')
    c.close()
  })
  const config = parseConfig(
    'modules:\n  smtp_banner:\n    prober: smtp\n    smtp: { tls: none }\n  smtp_starttls:\n    prober: smtp\n',
    'test.yml',
  )
  const app = createApp({
    version: '1.2.3',
    config: () => config,
    reload: () => Promise.resolve(undefined),
    logger: silentLogger,
    history: new History(),
    metrics: createExporterMetrics('1.2.3'),
    timeoutOffset: 0.5,
    states: new ProberStates(),
  })
  const server = app.listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  t.after(() => server.close())
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  await fetch(`${base}/probe?module=smtp_banner&target=127.0.0.1:${smtp.port}`)
  // STARTTLS is required by this module and the server does not offer it: a failure in phase starttls.
  await fetch(`${base}/probe?module=smtp_starttls&target=127.0.0.1:${smtp.port}`)

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
  t.after(() => browser.close())
  const page = await browser.newPage()
  await page.goto(base + '/')
  assert.equal(await page.title(), 'mailprobe_exporter')
  assert.equal(await page.textContent('#version'), '1.2.3')
  const modules = await page.locator('#modules tbody tr').allTextContents()
  assert.equal(modules.length, 2)
  assert.match(modules[0] ?? '', /smtp_banner\s*smtp\s*10s/)
  const rows = page.locator('#probes tbody tr')
  assert.equal(await rows.count(), 2)
  const failure = page.locator('#probes tbody tr.fail')
  assert.match((await failure.textContent()) ?? '', /smtp_starttls[\s\S]*failure[\s\S]*starttls/)
  assert.match((await page.locator('#probes tbody tr.ok').textContent()) ?? '', /smtp_banner[\s\S]*success/)
  await page.screenshot({ path: '/tmp/mailprobe-landing.png', fullPage: true })
  assert.equal(
    await failure.locator('a.details').getAttribute('href'),
    `probe-details?id=${/logs\?id=(\d+)/.exec(await failure.innerHTML())?.[1] ?? 'none'}`,
    "each row links to the probe's details next to its log",
  )
  await failure.locator('a', { hasText: 'logs' }).click()
  await page.waitForURL(/\/logs\?id=\d+$/)
  const log = (await page.textContent('body')) ?? ''
  assert.match(log, /Logs for the probe:/)
  assert.match(log, /STARTTLS is required \(tls: starttls\) but the server did not offer it/)
  assert.match(log, /Module configuration:/)
})

const SMTP = 'probe_smtp_duration_seconds'
const step = (name: string, start: number, seconds: number, extra: Partial<PhaseStep> = {}): PhaseStep => ({
  name,
  phase: name,
  metric: SMTP,
  start,
  seconds,
  ...extra,
})
const STEPS = [
  step('resolve', 0.2, 0.001),
  step('connect', 1.2, 0.004),
  step('banner', 5.2, 0.05),
  step('ehlo', 55.2, 0.1),
]

/** The tags an SVG/HTML text opens or closes, by name. */
const tags = (markup: string) => [...markup.matchAll(/<\/?([a-zA-Z][\w-]*)/g)].map((m) => m[1])
/** The attributes of the elements that carry data-failed="true". */
const failedElements = (svg: string) =>
  [...svg.matchAll(/<(\w+)[^>]*data-failed="true"[^>]*>/g)].map((m) => m[0])

test('waterfall: one row per step on a common axis in ms; the failed step is the red bar marked data-failed', () => {
  const svg = waterfallSvg(STEPS, 'ehlo', 0.16)
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/)
  assert.equal((svg.match(/<rect class="bar"/g) ?? []).length, 4)
  for (const name of ['resolve', 'connect', 'banner', 'ehlo'])
    assert.match(svg, new RegExp(`>${name}</text>`))
  assert.match(svg, />0 ms</)
  assert.match(svg, />50 ms</)
  assert.match(svg, />50\.0 ms</, 'each bar says its duration')
  assert.match(svg, /100 ms ✗ failed</)
  const failed = failedElements(svg).filter((e) => e.startsWith('<rect'))
  assert.equal(failed.length, 1)
  assert.match(failed[0] ?? '', /data-name="ehlo"/)
  assert.match(failed[0] ?? '', new RegExp(`fill="${FAILED_COLOUR}"`))
  assert.equal(svg.split(FAILED_COLOUR).length - 1, 1, 'red is for the failed bar only')
  // Widths are proportional to durations, on one scale.
  const widths = new Map(
    [...svg.matchAll(/<rect class="bar" data-name="(\w+)"[^>]* width="([\d.]+)"/g)].map(
      (m) => [m[1] ?? '', Number(m[2])] as const,
    ),
  )
  const ratio = (widths.get('ehlo') ?? 0) / (widths.get('banner') ?? 1)
  assert.ok(Math.abs(ratio - 2) < 0.05, `ehlo's bar is twice banner's: ${[...widths].join(' ')}`)
  assert.deepEqual(new Set(tags(svg)), new Set(['svg', 'title', 'rect', 'line', 'text', 'g']))
})

test('waterfall: a success has no red; a phase that repeats marks only its last step', () => {
  const ok = waterfallSvg(STEPS, undefined, 0.16)
  assert.doesNotMatch(ok, new RegExp(FAILED_COLOUR))
  assert.doesNotMatch(ok, /data-failed|✗/)
  const twice = waterfallSvg([...STEPS, step('ehlo', 160, 0.01)], 'ehlo', 0.2)
  const failed = failedElements(twice).filter((e) => e.startsWith('<rect'))
  assert.equal(failed.length, 1)
  assert.match(failed[0] ?? '', /data-seconds="0\.01"/)
})

test('waterfall: a failure that no step names gets a red marker row; no steps at all still draws', () => {
  const svg = waterfallSvg(STEPS.slice(0, 2), 'banner', 1)
  const marker = failedElements(svg).filter((e) => e.startsWith('<rect'))
  assert.equal(marker.length, 1)
  assert.match(marker[0] ?? '', /data-name="banner" data-failed="true" data-marker="true"/)
  assert.match(svg, />banner</)
  assert.match(svg, /✗ failed \(no step timed\)/)
  const empty = waterfallSvg([], undefined, 0)
  assert.match(empty, /^<svg[\s\S]*no steps recorded[\s\S]*<\/svg>$/)
  assert.doesNotMatch(empty, /NaN|Infinity/)
  const emptyFailed = waterfallSvg([], 'connect', 0.5)
  assert.equal(failedElements(emptyFailed).filter((e) => e.startsWith('<rect')).length, 1)
  assert.doesNotMatch(emptyFailed, /NaN|Infinity|no steps recorded/)
})

const HOSTILE = `"><script>alert(1)</script><img src=x onerror='alert(2)'>&amp;`

test('waterfall and details page: hostile phase, host, module and target names are escaped', () => {
  const steps = [step(HOSTILE, 0, 0.01), step('connect', 10, 0.02, { host: HOSTILE, leg: HOSTILE })]
  const svg = waterfallSvg(steps, HOSTILE, 0.05)
  assert.deepEqual(new Set(tags(svg)), new Set(['svg', 'title', 'rect', 'line', 'text', 'g']))
  assert.doesNotMatch(svg, /<script|<img|onerror='/)
  assert.match(svg, /&lt;script&gt;alert\(1\)&lt;\/script&gt;/)
  assert.match(svg, /&amp;amp;/)
  assert.equal(failedElements(svg).filter((e) => e.startsWith('<rect')).length, 1)
  const marker = waterfallSvg(steps, `${HOSTILE}x`, 0.05)
  assert.doesNotMatch(marker, /<script|<img/)
  const page = probeDetailsPage(
    record({ module: HOSTILE, target: HOSTILE, failedPhase: HOSTILE, phases: steps }),
  )
  assert.doesNotMatch(page, /<script|<img/)
  assert.deepEqual(
    new Set(tags(page)),
    new Set([
      'html',
      'head',
      'meta',
      'title',
      'style',
      'body',
      'p',
      'a',
      'h1',
      'table',
      'tbody',
      'tr',
      'th',
      'td',
      'h2',
      'figure',
      'svg',
      'rect',
      'line',
      'text',
      'g',
    ]),
  )
})

const record = (over: Partial<ProbeRecord> = {}): ProbeRecord => ({
  id: 7,
  time: new Date('2026-01-02T03:04:05Z'),
  module: 'smtp_starttls',
  target: 'mx.example.com:25',
  success: false,
  durationSeconds: 0.16,
  failedPhase: 'ehlo',
  debugText: () => 'log',
  debugBytes: 3,
  phases: STEPS,
  ...over,
})

test('details page: module, target, time, result, duration, failed phase, waterfall and a link to the log', () => {
  const page = probeDetailsPage(record())
  assert.match(page, /<td id="module">smtp_starttls<\/td>/)
  assert.match(page, /<td id="target">mx\.example\.com:25<\/td>/)
  assert.match(page, /<td id="time">2026-01-02T03:04:05\.000Z<\/td>/)
  assert.match(page, /<td id="result">failure<\/td>/)
  assert.match(page, /<td id="duration">0\.160s<\/td>/)
  assert.match(page, /<td id="failed-phase">ehlo<\/td>/)
  assert.match(page, /<figure id="waterfall">\n<svg [\s\S]*data-failed="true"[\s\S]*<\/svg>\n<\/figure>/)
  assert.match(page, /<a id="logs" href="logs\?id=7">/)
  assert.doesNotMatch(page, /<script|\bsrc=|href="https?:|url\(|@import/, 'no script, no external asset')
  const landing = landingPage('1', parseConfig('modules: {}\n', 't.yml'), [record()])
  assert.match(
    landing,
    /<a class="details" href="probe-details\?id=7">details<\/a> · <a href="logs\?id=7">logs<\/a>/,
  )
})

async function serve(t: TestContext, history: History) {
  const app = createApp({
    version: '1',
    config: () => parseConfig('modules: {}\n', 't.yml'),
    reload: () => Promise.resolve(undefined),
    logger: silentLogger,
    history,
    metrics: createExporterMetrics('1'),
    timeoutOffset: 0.5,
    states: new ProberStates(),
  })
  const server = app.listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  t.after(() => server.close())
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

test('details route: /probe-details?id=N is the page; an unknown or malformed id is a 404, as for /logs', async (t) => {
  const history = new History()
  const { id } = history.add({ ...record(), phases: STEPS })
  const base = await serve(t, history)
  const res = await fetch(`${base}/probe-details?id=${id}`)
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /^text\/html; charset=utf-8/)
  assert.match(await res.text(), /<h1>Probe 1<\/h1>[\s\S]*<svg [\s\S]*data-failed="true"/)
  for (const query of ['id=999', 'id=abc', 'id=', '', 'id=1&id=1', 'id[a]=1', 'id=-1', 'id=1.5']) {
    const details = await fetch(`${base}/probe-details?${query}`)
    const logs = await fetch(`${base}/logs?${query}`)
    assert.equal(details.status, 404, query)
    assert.equal(details.status, logs.status, `${query}: as /logs`)
    assert.equal(await details.text(), await logs.text())
  }
})

test("history: a probe's steps are kept with it and count toward the byte budget", () => {
  const many = Array.from({ length: 256 }, (_, i) => step(`s${i}`, i, 0.001))
  // 256 steps of ~100 bytes each: two such records exceed a 40 kB budget, though their texts are tiny.
  const history = new History(50, 200, 40_000)
  const first = history.add({ ...record(), phases: many })
  assert.equal(history.get(first.id)?.phases.length, 256)
  history.add({ ...record(), phases: many })
  assert.equal(history.get(first.id), undefined, 'the older record went for the budget')
  assert.equal(history.list().length, 1)
  const { phases, ...withoutSteps } = record()
  assert.equal(phases.length, 4)
  assert.deepEqual(history.add(withoutSteps).phases, [], 'a record added without steps has none')
})
