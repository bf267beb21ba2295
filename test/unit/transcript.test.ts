// The probe transcript is bounded: head, a marker saying what was cut, the newest lines; long lines are cut.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createProbeLogger, Transcript, type Logger } from '../../src/logger.ts'

const limits = { maxLineBytes: 20, headLines: 3, headBytes: 1000, tailLines: 2, tailBytes: 1000 }

test('transcript: keeps the first lines, a "... N more lines, M bytes cut ..." marker and the newest lines', () => {
  const t = new Transcript(limits)
  for (let i = 1; i <= 10; i++) t.add(`line ${i}`)
  assert.deepEqual(t.lines(), [
    'line 1',
    'line 2',
    'line 3',
    '... 5 more lines, 30 bytes cut ...',
    'line 9',
    'line 10',
  ])
})

test('transcript: a long line is cut with a note; under the limits nothing is marked', () => {
  const t = new Transcript(limits)
  t.add('a'.repeat(25))
  t.add('short')
  assert.deepEqual(t.lines(), ['a'.repeat(20) + ' ... (5 bytes cut)', 'short'])
})

test('transcript: the byte budget of the head applies too', () => {
  const t = new Transcript({ ...limits, headLines: 100, headBytes: 12 })
  for (const line of ['123456', '123456', '123456', 'last']) t.add(line)
  assert.deepEqual(t.lines(), [
    '123456',
    '123456',
    '... (transcript limit reached: the newest lines follow) ...',
    '123456',
    'last',
  ])
})

test('transcript: a flood of a million lines keeps a bounded transcript and stops flooding the process log', () => {
  const forwarded: string[] = []
  const parent: Logger = {
    debug: (msg) => forwarded.push(msg),
    info: (msg) => forwarded.push(msg),
    warn: (msg) => forwarded.push(msg),
    error: (msg) => forwarded.push(msg),
    child: () => parent,
  }
  const { logger, transcript } = createProbeLogger(parent, {})
  for (let i = 0; i < 1_000_000; i++) logger.debug(`S: * ${i} EXISTS`)
  logger.warn('probe failed')
  const lines = transcript.lines()
  assert.ok(lines.length <= 1001, `${lines.length} lines kept`)
  assert.ok(lines.join('\n').length < 70 * 1024, 'within the byte budget')
  assert.match(lines.find((l) => l.startsWith('... ')) ?? '', /^\.\.\. \d+ more lines, \d+ bytes cut \.\.\.$/)
  assert.match(lines.at(-1) ?? '', /probe failed/, 'the newest line (the failure) is kept')
  assert.ok(forwarded.length < 2000, `${forwarded.length} lines went to the process log`)
  assert.equal(forwarded.at(-1), 'probe failed', 'warnings still reach the process log')
})
