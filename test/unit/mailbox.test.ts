// Pure tests of the receiving leg's building blocks: header parsing (src/protocol/headers.ts) and isStale.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { header, parseHeaders, receivedAt } from '../../src/protocol/headers.ts'
import { isStale, uidSets } from '../../src/probers/roundtrip/mailbox.ts'

test('headers: parseHeaders lower-cases names, keeps repeated fields in order and unfolds folded lines', () => {
  const headers = parseHeaders(
    [
      'Received: from a.example by b.example',
      '\twith ESMTP id 1;',
      '  Tue, 14 Nov 2023 10:00:00 +0000',
      'Received: from c.example; Tue, 14 Nov 2023 09:59:58 +0000',
      'X-Mailprobe-Id:   abc-123  ',
      'Subject: a: b',
      '',
      'Body-Line: not a header',
      '',
    ].join('\r\n'),
  )
  assert.deepEqual(headers.get('received'), [
    'from a.example by b.example with ESMTP id 1; Tue, 14 Nov 2023 10:00:00 +0000',
    'from c.example; Tue, 14 Nov 2023 09:59:58 +0000',
  ])
  assert.deepEqual(headers.get('x-mailprobe-id'), ['abc-123'])
  assert.deepEqual(headers.get('subject'), ['a: b'], 'only the first colon separates')
  assert.equal(headers.has('body-line'), false, 'the body is not read')
  assert.deepEqual([...headers.keys()], ['received', 'x-mailprobe-id', 'subject'])
})

test('headers: parseHeaders takes bare LF line ends and skips lines without a name', () => {
  const headers = parseHeaders(
    'From: a@example.org\n: no name\ngarbage\nTo: b@example.org\n   c@example.org\n\nx: y',
  )
  assert.deepEqual(
    [...headers.entries()],
    [
      ['from', ['a@example.org']],
      ['to', ['b@example.org c@example.org']],
    ],
  )
})

test('headers: header() finds the first value whatever the case of the name, and undefined when absent', () => {
  const headers = parseHeaders('X-Mailprobe-Module: one\r\nx-mailprobe-module: two\r\n\r\n')
  assert.equal(header(headers, 'X-MAILPROBE-MODULE'), 'one')
  assert.equal(header(headers, 'X-Mailprobe-Sent'), undefined)
})

test('headers: receivedAt reads the date after the last ";" of the topmost Received header', () => {
  const at = receivedAt(
    parseHeaders(
      [
        'Received: from mx.example (mx.example [192.0.2.1]; TLS) by imap.example',
        ' (Dovecot) with LMTP id x; Tue, 14 Nov 2023 10:00:05 +0100',
        'Received: from client by mx.example; Tue, 14 Nov 2023 08:00:00 +0000',
        '',
        '',
      ].join('\r\n'),
    ),
  )
  assert.equal(at, Date.UTC(2023, 10, 14, 9, 0, 5))
})

test('headers: receivedAt is undefined without a Received header or with an unreadable date', () => {
  assert.equal(receivedAt(parseHeaders('Subject: hi\r\n\r\n')), undefined)
  assert.equal(receivedAt(parseHeaders('Received: from a by b; not a date\r\n\r\n')), undefined)
  assert.equal(receivedAt(parseHeaders('Received: from a by b\r\n\r\n')), undefined)
})

test('isStale: only a marked probe mail of this module, sent before the cut-off and not kept, is stale', () => {
  const before = 1_700_000_000_000
  const mail = { id: 'a1', module: 'rt', sent: String(before - 1) }
  assert.equal(isStale(mail, 'rt', before, []), true)
  assert.equal(isStale(mail, 'rt-other', before, []), false, 'another module')
  assert.equal(
    isStale({ ...mail, module: 'rt-other' }, 'rt', before, []),
    false,
    'a name that merely contains ours',
  )
  assert.equal(isStale({ ...mail, module: undefined }, 'rt', before, []), false, 'no module header')
  assert.equal(isStale(mail, 'rt', before, ['a1']), false, 'kept (still in flight)')
  assert.equal(isStale({ ...mail, id: undefined }, 'rt', before, []), false, 'no marker: never ours')
})

test('isStale: the send time must be a number before the cut-off; a missing or garbage one is never stale', () => {
  const before = 1_700_000_000_000
  const at = (sent: string | undefined) => isStale({ id: 'a1', module: 'rt', sent }, 'rt', before, [])
  assert.equal(at(String(before)), false, 'exactly at the cut-off')
  assert.equal(at(String(before + 1)), false, 'younger')
  assert.equal(at(undefined), false)
  assert.equal(at('yesterday'), false)
  assert.equal(at('NaN'), false)
  assert.equal(at('-Infinity'), false)
  assert.equal(at('0'), true, 'the epoch is old')
  // Number('') is 0: an empty header must not read as the epoch (and be swept at once).
  assert.equal(at(''), false, 'an empty header is not the epoch')
  assert.equal(at('  '), false)
})

test('uidSets: runs of consecutive UIDs become a:b, nothing else is named, and no set outgrows the limit', () => {
  assert.deepEqual(uidSets([]), [])
  assert.deepEqual(uidSets([7]), ['7'])
  assert.deepEqual(uidSets([9, 3, 4, 5, 7, 4, 1]), ['1,3:5,7,9'], 'sorted, duplicates dropped')
  // 2000 scattered UIDs (every other one): several sets, each within the limit, together exactly the input.
  const scattered = Array.from({ length: 2000 }, (_, i) => 1_000_000 + 2 * i)
  const sets = uidSets(scattered, 1000)
  assert.ok(sets.length > 1)
  assert.ok(sets.every((s) => s.length <= 1000))
  const named = sets.flatMap((s) =>
    s.split(',').flatMap((part) => {
      const [a = 0, b = a] = part.split(':').map(Number)
      return Array.from({ length: b - a + 1 }, (_, i) => a + i)
    }),
  )
  assert.deepEqual(named, scattered)
  assert.deepEqual(uidSets(Array.from({ length: 5000 }, (_, i) => i + 1)), ['1:5000'])
})
