// Targets: parsing host[:port] and matching allowed_targets rules.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { parseTarget, parseTargetRule, quote, targetAllowed, type TargetRule } from '../../src/targets.ts'

/** Accepted: the text and what it parses to (default port 25). */
const ACCEPTED: [string, { host: string; port: number }][] = [
  ['Mail.Example.com', { host: 'mail.example.com', port: 25 }],
  ['mail.example.com.', { host: 'mail.example.com', port: 25 }],
  ['mail.example.com:587', { host: 'mail.example.com', port: 587 }],
  ['mail:1', { host: 'mail', port: 1 }],
  ['_smtp-1.x_y.example:65535', { host: '_smtp-1.x_y.example', port: 65535 }],
  ['127.0.0.1:10587', { host: '127.0.0.1', port: 10587 }],
  ['192.0.2.1', { host: '192.0.2.1', port: 25 }],
  ['[2001:db8::1]:465', { host: '2001:db8::1', port: 465 }],
  ['[2001:DB8:0::1]', { host: '2001:db8::1', port: 25 }],
  ['[::1]:2999', { host: '::1', port: 2999 }],
  ['[::ffff:192.0.2.1]', { host: '::ffff:c000:201', port: 25 }],
  [`${'a'.repeat(63)}.example`, { host: `${'a'.repeat(63)}.example`, port: 25 }],
]

/** Refused: the text and the exact message (which names why). */
const REFUSED: [string, string][] = [
  ['', '"" is not a valid target: it is empty (host, host:port, [ipv6] or [ipv6]:port)'],
  ['::1:2999', '"::1:2999" is not a valid target: IPv6 addresses go in brackets: [::1]:2999 or [::1:2999]'],
  ['2001:db8::1', '"2001:db8::1" is not a valid target: IPv6 addresses go in brackets: [2001:db8::1]'],
  ['::1', '"::1" is not a valid target: IPv6 addresses go in brackets: [::1]'],
  ['a:b:c', '"a:b:c" is not a valid target: expected host, host:port, [ipv6] or [ipv6]:port'],
  ['[127.0.0.1]:25', '"[127.0.0.1]:25" is not a valid target: brackets are for IPv6 addresses only'],
  ['[mail.example.com]', '"[mail.example.com]" is not a valid target: brackets are for IPv6 addresses only'],
  ['[x::y]', '"[x::y]" is not a valid target: "x::y" is not an IPv6 address'],
  ['[]:25', '"[]:25" is not a valid target: "" is not an IPv6 address'],
  ['[::1]25', '"[::1]25" is not a valid target: expected [ipv6] or [ipv6]:port'],
  ['[::1', '"[::1" is not a valid target: expected [ipv6] or [ipv6]:port'],
  ['fe80::1%lo:25', '"fe80::1%lo:25" is not a valid target: zone ids (%lo) are not supported'],
  ['[fe80::1%eth0]:25', '"[fe80::1%eth0]:25" is not a valid target: zone ids (%eth0) are not supported'],
  [
    'mail.example.com\n',
    '"mail.example.com\\n" is not a valid target: it contains whitespace or control characters',
  ],
  [
    '\nmail.example.com',
    '"\\nmail.example.com" is not a valid target: it contains whitespace or control characters',
  ],
  [
    ' mail.example.com',
    '" mail.example.com" is not a valid target: it contains whitespace or control characters',
  ],
  [
    'mail.example.com:25 ',
    '"mail.example.com:25 " is not a valid target: it contains whitespace or control characters',
  ],
  ['a b', '"a b" is not a valid target: it contains whitespace or control characters'],
  ['mx\u0000.test', '"mx\\u0000.test" is not a valid target: it contains whitespace or control characters'],
  ['mx\u2028.test', '"mx\\u2028.test" is not a valid target: it contains whitespace or control characters'],
  ['mx\u200b.test', '"mx\\u200b.test" is not a valid target: it contains whitespace or control characters'],
  ['mail.example.com:0', '"mail.example.com:0" is not a valid target: port must be 1-65535'],
  ['mail.example.com:70000', '"mail.example.com:70000" is not a valid target: port must be 1-65535'],
  ['mail.example.com:', '"mail.example.com:" is not a valid target: port must be 1-65535'],
  ['mail.example.com:025', '"mail.example.com:025" is not a valid target: port must be 1-65535'],
  ['x:1a', '"x:1a" is not a valid target: port must be 1-65535'],
  ['x:+25', '"x:+25" is not a valid target: port must be 1-65535'],
  [':25', '":25" is not a valid target: the host is empty'],
  [
    'user@host',
    '"user@host" is not a valid target: "@" cannot be in a host name (letters, digits, hyphen, underscore and dots)',
  ],
  [
    'mail/x',
    '"mail/x" is not a valid target: "/" cannot be in a host name (letters, digits, hyphen, underscore and dots)',
  ],
  [
    'm\u00e9l.example',
    '"m\\u00e9l.example" is not a valid target: "\\u00e9" cannot be in a host name (letters, digits, hyphen, underscore and dots)',
  ],
  ['http://x', '"http://x" is not a valid target: a target is host or host:port, not a URL'],
  [
    'smtp://mail.example.com:587',
    '"smtp://mail.example.com:587" is not a valid target: a target is host or host:port, not a URL',
  ],
  ['a..example', '"a..example" is not a valid target: a host name has no empty labels (..)'],
  ['.example', '".example" is not a valid target: a host name has no empty labels (..)'],
  [
    '-mx.example',
    '"-mx.example" is not a valid target: a label of a host name cannot start or end with a hyphen',
  ],
  [
    'mx-.example',
    '"mx-.example" is not a valid target: a label of a host name cannot start or end with a hyphen',
  ],
  [
    `${'a'.repeat(64)}.example`,
    `"${'a'.repeat(64)}.example" is not a valid target: a label of a host name is at most 63 characters`,
  ],
  [
    '256.1.1.1',
    '"256.1.1.1" is not a valid target: not an IPv4 address (four numbers 0-255) nor a host name',
  ],
  ['127.1', '"127.1" is not a valid target: not an IPv4 address (four numbers 0-255) nor a host name'],
  [
    '010.0.0.1:25',
    '"010.0.0.1:25" is not a valid target: not an IPv4 address (four numbers 0-255) nor a host name',
  ],
  ['0x7f.0x1', '"0x7f.0x1" is not a valid target: not an IPv4 address (four numbers 0-255) nor a host name'],
  [
    '2130706433',
    '"2130706433" is not a valid target: not an IPv4 address (four numbers 0-255) nor a host name',
  ],
]

test('targets: exactly host, host:port, [ipv6] and [ipv6]:port are accepted', () => {
  for (const [text, expected] of ACCEPTED) assert.deepEqual(parseTarget(text, 25), expected, text)
})

test('targets: anything else is refused with a message that says why', () => {
  for (const [text, message] of REFUSED) assert.equal(parseTarget(text, 25), message, JSON.stringify(text))
})

test('targets: the refused text is shown on one line, escaped and cut short', () => {
  for (const [text] of REFUSED) {
    const message = parseTarget(text, 25)
    assert.equal(typeof message, 'string')
    assert.match(message as string, /^[\x20-\x7e]+$/, `${JSON.stringify(text)}: printable ASCII only`)
  }
  const long = parseTarget(`${'a'.repeat(300)}:25`, 25)
  assert.equal(long, `"${'a'.repeat(100)}..." is not a valid target: a host name is at most 253 characters`)
  assert.equal(quote('a\u0085b\r'), '"a\\u0085b\\r"')
  const name = `${'abcdefghi.'.repeat(25)}abcd`
  assert.equal(name.length, 254)
  assert.match(parseTarget(name, 25) as string, /: a host name is at most 253 characters$/)
})

const rules = (...texts: string[]) =>
  texts.map((t) => {
    const rule = parseTargetRule(t)
    assert.notEqual(typeof rule, 'string', t)
    return rule as TargetRule
  })

test('targets: a host rule matches any port, a host:port rule only that port', () => {
  assert.ok(targetAllowed({ host: 'mail.example.com', port: 25 }, rules('mail.example.com')))
  assert.ok(targetAllowed({ host: 'mail.example.com', port: 587 }, rules('mail.example.com:587')))
  assert.ok(!targetAllowed({ host: 'mail.example.com', port: 25 }, rules('mail.example.com:587')))
  assert.ok(!targetAllowed({ host: 'evil.example.org', port: 587 }, rules('mail.example.com')))
})

test('targets: a domain rule matches names under it, not look-alikes', () => {
  const r = rules('.example.com')
  assert.ok(targetAllowed({ host: 'mx1.example.com', port: 25 }, r))
  assert.ok(!targetAllowed({ host: 'example.com.evil.org', port: 25 }, r))
  assert.ok(!targetAllowed({ host: 'evilexample.com', port: 25 }, r))
})

test('targets: a network rule matches IP literals inside it only', () => {
  const r = rules('192.0.2.0/24', '2001:db8::/32')
  assert.ok(targetAllowed({ host: '192.0.2.17', port: 25 }, r))
  assert.ok(!targetAllowed({ host: '192.0.3.1', port: 25 }, r))
  assert.ok(targetAllowed({ host: '2001:db8::25', port: 25 }, r))
  assert.ok(
    !targetAllowed({ host: 'mail.example.com', port: 25 }, r),
    'a name is not checked against networks',
  )
})

test('targets: rules are parsed as strictly as targets, and an IPv6 host rule matches however it is written', () => {
  const [v6, v6port] = rules('[2001:DB8::25]', '[2001:db8::26]:587')
  assert.deepEqual(v6, { kind: 'host', text: '[2001:DB8::25]', host: '2001:db8::25' })
  assert.deepEqual(v6port, { kind: 'host', text: '[2001:db8::26]:587', host: '2001:db8::26', port: 587 })
  assert.ok(targetAllowed(parseTarget('[2001:db8:0:0::25]:25', 25) as { host: string; port: number }, [v6]))
  assert.deepEqual(rules('mail.example.com:587')[0], {
    kind: 'host',
    text: 'mail.example.com:587',
    host: 'mail.example.com',
    port: 587,
  })
  assert.deepEqual(rules('Mail.Example.com')[0], {
    kind: 'host',
    text: 'Mail.Example.com',
    host: 'mail.example.com',
  })
  assert.equal(JSON.stringify(rules('.example.com', '10.0.0.0/8')), '[".example.com","10.0.0.0/8"]')
})

test('targets: invalid rules say why', () => {
  assert.equal(parseTargetRule('10.0.0.0/33'), '"10.0.0.0/33" is not a valid network (CIDR)')
  assert.equal(parseTargetRule('fe80::%lo/64'), '"fe80::%lo/64" is not a valid network (CIDR)')
  assert.equal(parseTargetRule('.exa mple.com'), '".exa mple.com" is not a valid domain (.example.com)')
  assert.equal(parseTargetRule('.example.com\n'), '".example.com\\n" is not a valid domain (.example.com)')
  assert.equal(
    parseTargetRule('2001:db8::1'),
    '"2001:db8::1" is not a valid target rule: IPv6 addresses go in brackets: [2001:db8::1]',
  )
  assert.equal(
    parseTargetRule('[127.0.0.1]'),
    '"[127.0.0.1]" is not a valid target rule: brackets are for IPv6 addresses only',
  )
  assert.equal(
    parseTargetRule(' mail.example.com'),
    '" mail.example.com" is not a valid target rule: it contains whitespace or control characters',
  )
  assert.equal(
    parseTargetRule('mail.example.com:0'),
    '"mail.example.com:0" is not a valid target rule: port must be 1-65535',
  )
})
