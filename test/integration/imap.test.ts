// imap prober against the real Dovecot of the mail stack: TLS modes, mechanisms, mailbox facts, failures.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import { ImapFlow } from 'imapflow'
import { mailStack } from '../helpers/stack.ts'
import { probe, type ProbeOutcome } from '../helpers/probe.ts'

const stack = mailStack()
const [USER, PASSWORD] = stack.users.probe

function imapModule(
  options: { tls?: string; auth?: string; extra?: string; tlsConfig?: string; timeout?: string } = {},
) {
  return `
prober: imap
allowed_targets: [127.0.0.1]
timeout: ${options.timeout ?? '8s'}
imap:
  tls: ${options.tls ?? 'starttls'}
  tls_config: ${options.tlsConfig ?? `{ ca_file: ${stack.ca} }`}
  auth: ${options.auth ?? `{ username: ${USER}, password: ${PASSWORD} }`}
  ${options.extra ?? ''}`
}
const starttlsTarget = `127.0.0.1:${stack.ports.imap}`
const implicitTarget = `127.0.0.1:${stack.ports.imaps}`

/** INBOX counts as Dovecot's STATUS gives them, from a separate read-only connection. */
async function inboxStatus() {
  const client = new ImapFlow({
    host: '127.0.0.1',
    port: stack.ports.imaps,
    secure: true,
    tls: { ca: readFileSync(stack.ca) },
    auth: { user: USER, pass: PASSWORD },
    logger: false,
    disableAutoIdle: true,
  })
  client.on('error', () => undefined)
  await client.connect()
  try {
    const status = await client.status('INBOX', { messages: true, recent: true, unseen: true })
    assert.ok(status)
    return status
  } finally {
    await client.logout()
  }
}

/**
 * The probe's mailbox gauges equal what STATUS says. The stack is shared (a round trip may deliver
 * or delete mail meanwhile), so the probe's value must lie between the counts before and after it.
 */
async function assertMailboxFacts(run: () => Promise<ProbeOutcome>) {
  const before = await inboxStatus()
  const r = await run()
  const afterwards = await inboxStatus()
  for (const [gauge, key] of [
    ['probe_imap_mailbox_messages', 'messages'],
    ['probe_imap_mailbox_unseen', 'unseen'],
  ] as const) {
    const value = r.value(gauge)
    const [low, high] = [before[key] ?? -1, afterwards[key] ?? -1].sort((a, b) => a - b)
    assert.ok(
      value !== undefined && value >= (low ?? 0) && value <= (high ?? 0),
      `${gauge} ${value} vs STATUS ${low}..${high}`,
    )
  }
  assert.ok((r.value('probe_imap_mailbox_recent') ?? -1) >= 0)
  return r
}

test('imap integration: STARTTLS on Dovecot succeeds, times every phase reached and reports capabilities and mechanisms', async () => {
  const r = await assertMailboxFacts(() => probe(imapModule(), starttlsTarget))
  assert.equal(r.value('probe_success'), 1, r.debug)
  for (const phase of [
    'resolve',
    'connect',
    'tls',
    'banner',
    'starttls',
    'capability_tls',
    'auth',
    'select',
    'logout',
  ])
    assert.ok((r.value('probe_imap_duration_seconds', { phase }) ?? 0) > 0, `phase ${phase}`)
  // Dovecot's greeting carries the capability list, so imapflow sends no CAPABILITY before STARTTLS.
  assert.equal(r.value('probe_imap_duration_seconds', { phase: 'capability' }), 0)
  assert.equal(r.value('probe_imap_capability_info', { stage: 'plain', capability: 'STARTTLS' }), 1)
  assert.equal(r.value('probe_imap_capability_info', { stage: 'tls', capability: 'STARTTLS' }), undefined)
  assert.equal(r.value('probe_imap_capability_info', { stage: 'tls', capability: 'IMAP4rev1' }), 1)
  assert.equal(r.value('probe_imap_starttls_advertised'), 1)
  assert.equal(r.value('probe_imap_logindisabled_before_tls'), 0) // Dovecot trusts loopback
  assert.equal(r.value('probe_imap_auth_offered_before_tls'), 1)
  for (const stage of ['plain', 'tls']) {
    for (const mechanism of ['PLAIN', 'LOGIN'])
      assert.equal(r.value('probe_imap_auth_mechanism_advertised', { stage, mechanism, usable: 'true' }), 1)
    for (const mechanism of ['CRAM-MD5', 'SCRAM-SHA-1', 'SCRAM-SHA-256'])
      assert.equal(r.value('probe_imap_auth_mechanism_advertised', { stage, mechanism, usable: 'false' }), 1)
  }
  // The default choice: the strongest mechanism both sides support.
  assert.equal(r.value('probe_imap_auth_mechanism_used', { mechanism: 'PLAIN' }), 1)
  assert.equal(r.value('probe_tls_version_info', { version: 'TLS 1.3' }), 1)
  assert.ok((r.value('probe_ssl_last_chain_expiry_timestamp_seconds') ?? 0) > Date.now() / 1000)
})

test('imap integration: implicit TLS on Dovecot succeeds with STATUS facts', async () => {
  const r = await assertMailboxFacts(() =>
    probe(imapModule({ tls: 'implicit', extra: 'mailbox_check: status' }), implicitTarget),
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  for (const phase of ['resolve', 'connect', 'tls', 'banner', 'auth', 'select', 'logout'])
    assert.ok((r.value('probe_imap_duration_seconds', { phase }) ?? 0) > 0, `phase ${phase}`)
  // ID is the only command before login here (the greeting lists the capabilities).
  assert.ok((r.value('probe_imap_duration_seconds', { phase: 'capability' }) ?? 0) > 0)
  for (const phase of ['starttls', 'capability_tls'])
    assert.equal(r.value('probe_imap_duration_seconds', { phase }), 0, phase)
  assert.equal(r.value('probe_imap_capability_info', { stage: 'tls', capability: 'AUTH=PLAIN' }), 1)
  assert.equal(r.value('probe_imap_starttls_advertised'), undefined) // no cleartext list on 993
  assert.equal(r.value('probe_imap_auth_mechanism_used', { mechanism: 'PLAIN' }), 1)
})

test('imap integration: PLAIN, LOGIN and IMAP-LOGIN each log in to Dovecot when forced', async () => {
  for (const mechanism of ['PLAIN', 'LOGIN', 'IMAP-LOGIN']) {
    const r = await probe(
      imapModule({ auth: `{ username: ${USER}, password: ${PASSWORD}, mechanisms: [${mechanism}] }` }),
      starttlsTarget,
    )
    assert.equal(r.value('probe_success'), 1, `${mechanism}: ${r.debug}`)
    assert.equal(r.value('probe_imap_auth_mechanism_used', { mechanism }), 1, mechanism)
    const command =
      mechanism === 'IMAP-LOGIN' ? /C: \S+ LOGIN <redacted>/ : new RegExp(`C: \\S+ AUTHENTICATE ${mechanism}`)
    assert.match(r.debug, command)
  }
})

test('imap integration: another user logs in just as well', async () => {
  const [user, password] = stack.users.alice
  const r = await probe(
    imapModule({ tls: 'implicit', auth: `{ username: ${user}, password: ${password} }` }),
    implicitTarget,
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
})

test('imap integration: a mailbox that does not exist fails in phase select', async () => {
  const r = await probe(imapModule({ extra: 'mailbox: Does-Not-Exist' }), starttlsTarget)
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'select')
  assert.match(r.debug, /doesn't exist|NONEXISTENT/)
  const status = await probe(
    imapModule({ tls: 'implicit', extra: 'mailbox: Does-Not-Exist\n  mailbox_check: status' }),
    implicitTarget,
  )
  assert.equal(status.failedPhase, 'select')
})

test('imap integration: without ca_file the certificate does not verify: phase tls, no login', async () => {
  for (const [tls, target] of [
    ['starttls', starttlsTarget],
    ['implicit', implicitTarget],
  ] as const) {
    const r = await probe(imapModule({ tls, tlsConfig: '{}' }), target)
    assert.equal(r.value('probe_success'), 0, tls)
    assert.equal(r.failedPhase, 'tls', `${tls}: ${r.debug}`)
    assert.match(r.debug, /certificate verification failed/)
    assert.doesNotMatch(r.debug, /AUTHENTICATE|LOGIN <redacted>/)
    assert.ok(
      (r.value('probe_ssl_earliest_cert_expiry') ?? 0) > 0,
      `${tls}: the certificate facts are still recorded`,
    )
  }
})

// Last: Dovecot may slow down the next logins from this address after a failure.
test('imap integration: a wrong password fails in phase auth with Dovecot text', async () => {
  const r = await probe(
    imapModule({ auth: `{ username: ${USER}, password: not-the-password }` }),
    starttlsTarget,
  )
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'auth')
  assert.match(r.debug, /AUTHENTICATIONFAILED|Authentication failed/)
})
