// IMAP plumbing without a server: the log-line parsers, and the imapflow internals ImapSession relies on.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import { ImapFlow } from 'imapflow'
import {
  authMechanisms,
  capabilityList,
  clientCommand,
  hasCapability,
  recentCount,
  redactClientLine,
  serverLine,
} from '../../src/protocol/imap-reply.ts'

test('imap-reply: client lines give tag and verb; continuations give nothing', () => {
  assert.deepEqual(clientCommand('4 AUTHENTICATE PLAIN'), { tag: '4', verb: 'AUTHENTICATE' })
  assert.deepEqual(clientCommand('1F uid fetch 1:* (FLAGS)'), { tag: '1F', verb: 'UID' })
  assert.equal(clientCommand('AHByb2JlQG1haWwudGVzdAAoKiB2YWx1ZSBoaWRkZW4gKik='), undefined)
  assert.equal(clientCommand('(* value hidden *)'), undefined)
  assert.equal(clientCommand('(* 12B continuation *)'), undefined)
  assert.equal(clientCommand('DONE'), undefined)
})

test('imap-reply: server lines give tag and first word', () => {
  assert.deepEqual(serverLine('* OK [CAPABILITY IMAP4rev1] ready'), { tag: '*', word: 'OK' })
  assert.deepEqual(serverLine('A no [NONEXISTENT] Mailbox does not exist'), { tag: 'A', word: 'NO' })
  assert.deepEqual(serverLine('+'), { tag: '+', word: '' })
  assert.deepEqual(serverLine('* 3 EXISTS'), { tag: '*', word: '3' })
})

test('imap-reply: capability lists come from CAPABILITY responses and [CAPABILITY] codes only', () => {
  assert.deepEqual(capabilityList('* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN'), [
    'IMAP4rev1',
    'STARTTLS',
    'AUTH=PLAIN',
  ])
  assert.deepEqual(capabilityList('* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] Dovecot ready.'), [
    'IMAP4rev1',
    'LOGINDISABLED',
  ])
  assert.deepEqual(capabilityList('4 OK [CAPABILITY IMAP4rev1 NAMESPACE] Logged in'), [
    'IMAP4rev1',
    'NAMESPACE',
  ])
  assert.equal(capabilityList('* OK [UIDVALIDITY 7] UIDs valid'), undefined)
  assert.equal(capabilityList('* LIST (\\HasNoChildren) "/" CAPABILITY'), undefined)
})

test('imap-reply: AUTH= mechanisms, capability lookup and RECENT counts', () => {
  const caps = ['IMAP4rev1', 'auth=plain', 'AUTH=CRAM-MD5', 'LOGINDISABLED']
  assert.deepEqual(authMechanisms(caps), ['PLAIN', 'CRAM-MD5'])
  assert.equal(hasCapability(caps, 'AUTH=PLAIN'), true)
  assert.equal(hasCapability(caps, 'STARTTLS'), false)
  assert.equal(recentCount('* 12 RECENT'), 12)
  assert.equal(recentCount('* 12 EXISTS'), undefined)
})

test('imap-reply: the debug log never shows LOGIN arguments or SASL payloads', () => {
  assert.equal(redactClientLine('3 LOGIN "probe@mail.test" "(* value hidden *)"'), '3 LOGIN <redacted>')
  assert.equal(redactClientLine('4 AUTHENTICATE PLAIN'), '4 AUTHENTICATE PLAIN')
  assert.equal(
    redactClientLine('4 AUTHENTICATE XOAUTH2 dXNlcj1wcm9iZQ=='),
    '4 AUTHENTICATE XOAUTH2 <redacted>',
  )
  assert.equal(redactClientLine('cHJvYmVAbWFpbC50ZXN0'), '<redacted>')
  assert.equal(redactClientLine('(* value hidden *)'), '<redacted>')
  assert.equal(redactClientLine('DONE'), 'DONE')
  assert.equal(redactClientLine('9 EXAMINE INBOX'), '9 EXAMINE INBOX')
})

// The internals imap-session.ts touches. If imapflow renames or reshapes them, these fail first; the
// behaviour built on them is covered against a scripted server in imap-prober.test.ts (no credentials
// before our login hook says so; the used mechanism, IMAP-LOGIN included, comes from authCapabilities).
test('imapflow internals: authenticate() is the login step of connect(), after STARTTLS and ID', () => {
  const proto = ImapFlow.prototype as unknown as Record<string, unknown>
  assert.equal(typeof proto['authenticate'], 'function')
  const startSession = String(proto['startSession'])
  const order = ['upgradeToSTARTTLS', "'ID'", 'this.authenticate()', "'NAMESPACE'"].map((s) =>
    startSession.indexOf(s),
  )
  assert.ok(
    order.every((i) => i >= 0),
    `startSession changed: ${startSession}`,
  )
  assert.deepEqual(
    [...order].sort((a, b) => a - b),
    order,
  )
  // It reads the credentials from options.auth when it runs, which is when our hook has just set them.
  assert.match(String(proto['authenticate']), /this\.options\.auth/)
})

test('imapflow internals: authCapabilities is a Map that the login commands mark with the key used', () => {
  const client = new ImapFlow({ logger: false })
  assert.ok((client as unknown as { authCapabilities: unknown }).authCapabilities instanceof Map)
  const source = (file: string) =>
    readFileSync(new URL(import.meta.resolve(`imapflow/lib/commands/${file}`)), 'utf8')
  assert.match(source('login.js'), /authCapabilities\.set\('LOGIN', true\)/)
  for (const key of ['AUTH=PLAIN', 'AUTH=LOGIN', 'AUTH=${command}'])
    assert.ok(source('authenticate.js').includes(`authCapabilities.set(\`${key}\`, true)`), key)
})

test('imapflow internals: the public pieces we steer it with are where we expect them', () => {
  const client = new ImapFlow({ logger: false, auth: { user: 'u', pass: 'p' } })
  assert.ok(client.capabilities instanceof Map) // XOAUTH2 is forced by hiding AUTH=OAUTHBEARER here
  assert.equal(client.options.auth?.user, 'u') // our hook replaces options.auth right before login
  assert.equal(client.authenticated, false)
})

test('imapflow internals: exec() is how uidExpunge sends UID EXPUNGE, and its messageDelete would fall back to EXPUNGE', () => {
  const client = new ImapFlow({ logger: false, auth: { user: 'u', pass: 'p' } })
  assert.equal(typeof (client as unknown as { exec: unknown }).exec, 'function')
  // Why we do not use messageDelete(): it chooses a bare EXPUNGE when UIDPLUS is missing at that moment.
  const expunge = readFileSync(new URL(import.meta.resolve('imapflow/lib/commands/expunge.js')), 'utf8')
  assert.match(expunge, /byUid \? 'UID EXPUNGE' : 'EXPUNGE'/)
})

test('imapflow internals: the STARTTLS upgrade timer is this.upgradeTimeout, armed before transport.upgrade() runs', () => {
  const upgrade = String((ImapFlow.prototype as unknown as Record<string, unknown>)['upgradeToSTARTTLS'])
  const armed = upgrade.indexOf('this.upgradeTimeout = setTimeout(')
  const called = upgrade.indexOf('this.options.transport.upgrade(')
  assert.ok(armed >= 0 && called > armed, `upgradeToSTARTTLS changed: ${upgrade}`)
})
