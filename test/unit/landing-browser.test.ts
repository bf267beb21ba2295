// A probe's details page in a real browser: from the landing page, click through to the phase waterfall,
// screenshot the SVG and look at its pixels (the failed bar is red, a success has no red, bars scale).
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { deflateSync } from 'node:zlib'
import { after, before, test, type TestContext } from 'node:test'
import { chromium, type Browser, type Locator, type Page } from 'playwright-core'
import { startExporter } from '../helpers/exporter.ts'
import { decodePng, pixel, type Image } from '../helpers/png.ts'
import { scriptedServer, type ScriptConnection } from '../servers/scripted.ts'

const CHROMIUM = '/usr/bin/chromium'
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const start = async (t: TestContext, yaml: string) => (await startExporter(t, yaml)).base

/** The greeting after 40 ms, then the EHLO reply after 150 ms: ehlo is the longest step by far. */
async function slowGreeting(c: ScriptConnection, ehloReply: string) {
  await sleep(40)
  c.line('220 mx.test ESMTP')
  await c.expect('EHLO')
  await sleep(150)
  c.line(ehloReply)
}

/** A PNG of `rows` (RGB), each row filtered with the filter type given for it (CRCs left 0: not checked). */
function encodePng(width: number, rows: number[][], filters: number[]): Buffer {
  const chunk = (type: string, body: Buffer) => {
    const head = Buffer.alloc(8)
    head.writeUInt32BE(body.length)
    head.write(type, 4, 'latin1')
    return Buffer.concat([head, body, Buffer.alloc(4)])
  }
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(width, 0)
  ihdr.writeUInt32BE(rows.length, 4)
  ihdr.set([8, 2, 0, 0, 0], 8)
  const paeth = (a: number, b: number, c: number) => {
    const p = a + b - c
    const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)]
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c
  }
  const data = rows.flatMap((row, y) => {
    const filter = filters[y] ?? 0
    const up = rows[y - 1] ?? []
    return [
      filter,
      ...row.map((v, i) => {
        const [a, b, c] = [row[i - 3] ?? 0, up[i] ?? 0, up[i - 3] ?? 0]
        const predicted = [0, a, b, (a + b) >> 1, paeth(a, b, c)][filter] ?? 0
        return (v - predicted) & 0xff
      }),
    ]
  })
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.from(data))),
    chunk('IEND', Buffer.alloc(0)),
  ])
}

test('png: the test decoder undoes each filter type (0-4) and refuses what it cannot read', () => {
  const width = 3
  const rows = Array.from({ length: 6 }, (_, y) =>
    Array.from({ length: width * 3 }, (_, i) => (y * 97 + i * 41 + ((y * i) % 7) * 13) & 0xff),
  )
  const image = decodePng(encodePng(width, rows, [0, 1, 2, 3, 4, 3]))
  assert.equal(image.width, width)
  assert.equal(image.height, 6)
  for (let y = 0; y < 6; y++)
    for (let x = 0; x < width; x++) {
      const [r, g, b] = rows[y]!.slice(x * 3, x * 3 + 3)
      assert.deepEqual(pixel(image, x, y), [r, g, b, 255], `pixel ${x},${y}`)
    }
  assert.throws(() => decodePng(encodePng(width, rows, [5])), /bad PNG filter type 5/)
  assert.throws(() => decodePng(Buffer.from('GIF89a')), /not a PNG/)
})

let browser: Browser
before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is required (apt-get install chromium)`)
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  })
})
after(() => browser.close())

/** Red as the failed bar is drawn (#d32f2f), and its red text; not the pale red of a failed table row. */
const isRed = ([r, g, b]: readonly number[]) => (r ?? 0) >= 150 && (g ?? 255) <= 90 && (b ?? 255) <= 90
/** The blue of a step that did not fail (#3f72c4). */
const isBlue = ([r, g, b]: readonly number[]) => (b ?? 0) >= 150 && (r ?? 255) <= 110 && (g ?? 255) <= 150

interface Box {
  x: number
  y: number
  width: number
  height: number
}

/** The share of pixels inside `box` (in image coordinates, shrunk by 2 px against anti-aliasing) that match. */
function share(image: Image, box: Box, match: (p: readonly number[]) => boolean): number {
  let hits = 0
  let all = 0
  for (let y = Math.ceil(box.y + 2); y < Math.floor(box.y + box.height - 2); y++)
    for (let x = Math.ceil(box.x + 2); x < Math.floor(box.x + box.width - 2); x++) {
      all++
      if (match(pixel(image, x, y))) hits++
    }
  assert.ok(all > 0, `box ${JSON.stringify(box)} holds pixels`)
  return hits / all
}

/** The rows (y) of the image where a pixel matches. */
function rowsWhere(image: Image, match: (p: readonly number[]) => boolean): number[] {
  const rows: number[] = []
  for (let y = 0; y < image.height; y++)
    for (let x = 0; x < image.width; x++)
      if (match(pixel(image, x, y))) {
        rows.push(y)
        break
      }
  return rows
}

async function box(locator: Locator): Promise<Box> {
  const b = await locator.boundingBox()
  assert.ok(b, 'the element is rendered')
  return b
}

/** The waterfall on the page: its screenshot, and each bar's box relative to it, with its step's seconds. */
async function waterfall(page: Page) {
  const svg = page.locator('svg.waterfall')
  const origin = await box(svg)
  const image = decodePng(await svg.screenshot())
  assert.ok(Math.abs(image.width - origin.width) <= 1, `screenshot at 1 px per CSS px (${image.width})`)
  const bars = []
  for (const bar of await svg.locator('rect.bar').all()) {
    const b = await box(bar)
    bars.push({
      name: (await bar.getAttribute('data-name')) ?? '',
      seconds: Number(await bar.getAttribute('data-seconds')),
      failed: (await bar.getAttribute('data-failed')) === 'true',
      box: { ...b, x: b.x - origin.x, y: b.y - origin.y },
    })
  }
  return { image, bars }
}

/** The bar of the longest step is the widest, and bars of some width scale with their steps' seconds. */
function assertProportional(bars: Awaited<ReturnType<typeof waterfall>>['bars']) {
  const longest = bars.reduce((a, b) => (b.seconds > a.seconds ? b : a))
  const widest = bars.reduce((a, b) => (b.box.width > a.box.width ? b : a))
  assert.equal(widest.name, longest.name, 'the longest step has the widest bar')
  assert.equal(longest.name, 'ehlo')
  const scales = bars.filter((b) => b.box.width > 20).map((b) => b.box.width / b.seconds)
  assert.ok(scales.length >= 2, 'banner and ehlo both have wide bars')
  const [low, high] = [Math.min(...scales), Math.max(...scales)]
  assert.ok(high / low < 1.1, `px per second agree: ${scales.map((s) => s.toFixed(0)).join(', ')}`)
}

test('details page in Chromium: the link from the landing page opens a waterfall whose failed bar is red', async (t) => {
  const failing = await scriptedServer(t, async (c) => {
    await slowGreeting(c, '421 4.3.2 shutting down')
    c.close()
  })
  const working = await scriptedServer(t, async (c) => {
    await slowGreeting(c, '250 mx.test')
    await c.expect('QUIT')
    c.line('221 bye')
    c.close()
  })
  const base = await start(
    t,
    'modules:\n  plain:\n    prober: smtp\n    timeout: 5s\n    smtp: { tls: none }\n',
  )
  await fetch(`${base}/probe?module=plain&target=127.0.0.1:${failing.port}`)
  await fetch(`${base}/probe?module=plain&target=127.0.0.1:${working.port}`)

  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 })
  t.after(() => page.close())

  // The failure: click through from its row on the landing page.
  await page.goto(`${base}/`)
  await page.locator('#probes tbody tr.fail a.details').click()
  await page.waitForURL(/\/probe-details\?id=\d+$/)
  assert.equal(await page.textContent('#module'), 'plain')
  assert.equal(await page.textContent('#target'), `127.0.0.1:${failing.port}`)
  assert.equal(await page.textContent('#result'), 'failure')
  assert.equal(await page.textContent('#failed-phase'), 'ehlo')
  assert.match((await page.textContent('#waterfall')) ?? '', /✗ failed/)
  const failed = await waterfall(page)
  await page.screenshot({ path: '/tmp/mailprobe-details-failure.png', fullPage: true })
  assert.deepEqual(
    failed.bars.map((b) => b.name),
    ['resolve', 'connect', 'banner', 'ehlo'],
    'one bar per step, in order: steps before the failed one too',
  )
  const failedBar = failed.bars.find((b) => b.failed)
  assert.equal(failedBar?.name, 'ehlo')
  assert.equal(failed.bars.filter((b) => b.failed).length, 1)
  const red = share(failed.image, failedBar.box, isRed)
  assert.ok(red > 0.9, `the failed bar is red (${(red * 100).toFixed(0)}% of its pixels)`)
  const banner = failed.bars.find((b) => b.name === 'banner')
  assert.ok(banner)
  assert.equal(share(failed.image, banner.box, isRed), 0, 'a step that did not fail is not red')
  assert.ok(share(failed.image, banner.box, isBlue) > 0.9, 'it is blue')
  // Red is the failed row's alone: its bar, its name and its "✗ failed".
  const redRows = rowsWhere(failed.image, isRed)
  const { y, height } = failedBar.box
  assert.ok(redRows.length > 0)
  assert.ok(
    redRows.every((r) => r >= y - 4 && r <= y + height + 4),
    `red only in the failed row (${y}..${y + height}): rows ${redRows[0]}..${redRows.at(-1)}`,
  )
  assertProportional(failed.bars)

  // The log is one click away.
  await page.locator('a#logs').click()
  await page.waitForURL(/\/logs\?id=\d+$/)
  assert.match((await page.textContent('body')) ?? '', /probe failed.*phase=ehlo/)

  // The success: no red anywhere in its waterfall.
  await page.goto(`${base}/`)
  await page.locator('#probes tbody tr.ok a.details').click()
  await page.waitForURL(/\/probe-details\?id=\d+$/)
  assert.equal(await page.textContent('#result'), 'success')
  assert.equal(await page.textContent('#failed-phase'), '')
  const ok = await waterfall(page)
  await page.screenshot({ path: '/tmp/mailprobe-details-success.png', fullPage: true })
  assert.deepEqual(
    ok.bars.map((b) => b.name),
    ['resolve', 'connect', 'banner', 'ehlo', 'quit'],
  )
  assert.equal(ok.bars.filter((b) => b.failed).length, 0)
  assert.deepEqual(rowsWhere(ok.image, isRed), [], 'no red pixel in a success')
  const ehlo = ok.bars.find((b) => b.name === 'ehlo')
  assert.ok(ehlo && share(ok.image, ehlo.box, isBlue) > 0.9, 'the bars are drawn (blue)')
  assertProportional(ok.bars)
  assert.deepEqual([...failing.errors, ...working.errors], [])
})
