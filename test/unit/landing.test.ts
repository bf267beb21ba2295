// The landing page in a real browser (Debian's chromium, headless, driven by playwright-core).
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { test } from 'node:test'
import { chromium } from 'playwright-core'
import { parseConfig } from '../../src/config.ts'
import { createExporterMetrics } from '../../src/exporter-metrics.ts'
import { History } from '../../src/history.ts'
import { silentLogger } from '../../src/logger.ts'
import { ProberStates } from '../../src/probers/index.ts'
import { createApp } from '../../src/server.ts'
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
  await failure.locator('a', { hasText: 'logs' }).click()
  await page.waitForURL(/\/logs\?id=\d+$/)
  const log = (await page.textContent('body')) ?? ''
  assert.match(log, /Logs for the probe:/)
  assert.match(log, /STARTTLS is required \(tls: starttls\) but the server did not offer it/)
  assert.match(log, /Module configuration:/)
})
