// The process logger and the line formats: levels, attrs of children, logfmt quoting, and what a probe logger forwards.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createLogger, createProbeLogger, formatJson, formatLogfmt } from '../../src/logger.ts'

const time = new Date('2026-12-03T10:00:00.000Z')

test('formatLogfmt: ts, level and msg first, then the attrs; quoted when needed, undefined left out', () => {
  assert.equal(
    formatLogfmt(
      'debug',
      'S: 250 ok',
      { phase: 'ehlo', bytes: 12, none: undefined, error: new Error('a b') },
      time,
    ),
    'ts=2026-12-03T10:00:00.000Z level=debug msg="S: 250 ok" phase=ehlo bytes=12 error="a b"',
  )
  assert.equal(
    formatLogfmt('info', 'x="1"', { list: ['a', 'b'] }, time),
    String.raw`ts=2026-12-03T10:00:00.000Z level=info msg="x=\"1\"" list="[\"a\",\"b\"]"`,
  )
  // an attr named like a line field takes its place, as in the JSON format
  assert.equal(
    formatLogfmt('warn', 'm', { msg: 'other', a: 1 }, time),
    'ts=2026-12-03T10:00:00.000Z level=warn msg=other a=1',
  )
  assert.equal(
    formatJson('warn', 'm', { msg: 'other', a: 1 }, time),
    '{"ts":"2026-12-03T10:00:00.000Z","level":"warn","msg":"other","a":1}',
  )
})

test('createLogger: lines below the level are not written; children carry their attrs, the line its own on top', () => {
  const lines: string[] = []
  const logger = createLogger({ level: 'info', format: 'json' }, (line) => lines.push(line))
  const child = logger.child({ module: 'm', target: 't' }).child({ target: 'u' })
  child.debug('hidden', { a: 1 })
  child.info('shown', { a: 1 })
  child.error('failed')
  assert.equal(lines.length, 2)
  const [shown, failed] = lines.map((l) => JSON.parse(l) as Record<string, unknown>)
  assert.deepEqual(
    { ...shown, ts: undefined },
    { ts: undefined, level: 'info', msg: 'shown', module: 'm', target: 'u', a: 1 },
  )
  assert.deepEqual(
    { ...failed, ts: undefined },
    { ts: undefined, level: 'error', msg: 'failed', module: 'm', target: 'u' },
  )
})

test('createProbeLogger: every level goes to the transcript; the process log keeps its own level', () => {
  const lines: string[] = []
  const parent = createLogger({ level: 'warn', format: 'logfmt' }, (line) => lines.push(line))
  const { logger, transcript } = createProbeLogger(parent, { module: 'm' })
  logger.debug('C: EHLO x')
  logger.warn('slow', { ms: 5 })
  assert.deepEqual(
    transcript.lines().map((l) => l.replace(/^ts=\S+ /, '')),
    ['level=debug msg="C: EHLO x"', 'level=warn msg=slow ms=5'],
  )
  assert.equal(lines.length, 1)
  assert.match(lines[0]!, /^ts=\S+ level=warn msg=slow module=m ms=5$/)
})
