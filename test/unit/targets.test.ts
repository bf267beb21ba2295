// Targets: parsing host[:port] and matching allowed_targets rules.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { parseTarget, parseTargetRule, targetAllowed, type TargetRule } from '../../src/targets.ts'

test('targets: host, host:port, IPv6 with and without brackets', () => {
  assert.deepEqual(parseTarget('Mail.Example.com', 25), { host: 'mail.example.com', port: 25 })
  assert.deepEqual(parseTarget('mail.example.com:587', 25), { host: 'mail.example.com', port: 587 })
  assert.deepEqual(parseTarget('[2001:db8::1]:465', 25), { host: '2001:db8::1', port: 465 })
  assert.deepEqual(parseTarget('2001:db8::1', 25), { host: '2001:db8::1', port: 25 })
  assert.deepEqual(parseTarget('127.0.0.1:10587', 25), { host: '127.0.0.1', port: 10587 })
  for (const bad of [
    '',
    'mail.example.com:0',
    'mail.example.com:70000',
    'a b',
    'user@host',
    'http://x',
    'x:1a',
  ])
    assert.equal(typeof parseTarget(bad, 25), 'string', bad)
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

test('targets: invalid rules say why', () => {
  assert.equal(parseTargetRule('10.0.0.0/33'), '"10.0.0.0/33" is not a valid network (CIDR)')
  assert.equal(parseTargetRule('.exa mple.com'), '".exa mple.com" is not a valid domain (.example.com)')
})
