// SMTP plumbing: reply parsing, AUTH redaction, and the nodemailer internals smtp-session.ts relies on.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import SMTPConnection from 'nodemailer/lib/smtp-connection'
import { authMechanisms, ehloExtensions, parseReply, queueId } from '../../src/protocol/smtp-reply.ts'
import { redactAuth } from '../../src/protocol/smtp-session.ts'

test('smtp-reply: parses code, enhanced status code and text of the last line', () => {
  assert.deepEqual(parseReply('250-mx.test\n250 2.0.0 Ok: queued as 4Xy1Z2'), {
    code: 250,
    enhanced: '2.0.0',
    text: '2.0.0 Ok: queued as 4Xy1Z2',
  })
  assert.deepEqual(parseReply('535 Authentication failed'), {
    code: 535,
    enhanced: undefined,
    text: 'Authentication failed',
  })
  assert.equal(parseReply('garbage'), undefined)
})

test('smtp-reply: finds queue ids of Postfix, Exim and bare OK replies', () => {
  assert.equal(queueId('2.0.0 Ok: queued as 1CE6920C160'), '1CE6920C160')
  assert.equal(queueId('OK id=1rAbCd-000123-Xy'), '1rAbCd-000123-Xy')
  assert.equal(queueId('2.0.0 OK <0123456789abcdef@mx>'), '0123456789abcdef@mx')
  assert.equal(queueId('2.0.0 Ok'), undefined)
})

test('smtp-reply: EHLO extensions and AUTH mechanisms, in both AUTH forms', () => {
  const reply = '250-mx.test\n250-PIPELINING\n250-AUTH PLAIN login\n250-AUTH=CRAM-MD5\n250 SIZE 100'
  assert.deepEqual(
    ehloExtensions(reply).map((e) => e.keyword),
    ['PIPELINING', 'AUTH', 'AUTH', 'SIZE'],
  )
  assert.deepEqual(authMechanisms(reply), ['PLAIN', 'LOGIN', 'CRAM-MD5'])
  assert.deepEqual(authMechanisms('250-mx\n250 SIZE 1'), [])
})

test('smtp-session: AUTH payloads are redacted, the mechanism name is kept', () => {
  assert.equal(redactAuth('AUTH PLAIN AHVzZXIAc2VjcmV0'), 'AUTH PLAIN <redacted>')
  assert.equal(redactAuth('AUTH LOGIN'), 'AUTH LOGIN')
  assert.equal(redactAuth('dXNlcg=='), '<redacted>')
  assert.equal(redactAuth(''), '')
})

test('nodemailer still has the internals smtp-session.ts wraps (_upgradeConnection, _supportedExtensions, _socket)', () => {
  const conn = new SMTPConnection({ host: '127.0.0.1', port: 1 })
  const internals = conn as unknown as Record<string, unknown>
  assert.equal(typeof internals['_upgradeConnection'], 'function')
  assert.ok(Array.isArray(internals['_supportedExtensions']))
  assert.ok('_socket' in internals)
  assert.ok(internals['customAuth'] instanceof Map)
})
