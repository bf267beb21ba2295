// smtp prober against the project's real Postfix (submission STARTTLS, submissions 465, port 25 with a test mail).
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { probe } from '../helpers/probe.ts'
import { mailStack } from '../helpers/stack.ts'

const stack = mailStack()
const [user, pass] = stack.users.probe

const submission = (auth: string, tls = 'starttls', extra = '') => `
prober: smtp
allowed_targets: [127.0.0.1]
timeout: 8s
smtp:
  tls: ${tls}
  tls_config: { ca_file: ${stack.ca} }
  auth: ${auth}
  ${extra}`

test('smtp (Postfix): submission with STARTTLS and AUTH succeeds, times every phase and picks SCRAM-SHA-256', async () => {
  const r = await probe(
    submission(`{ username: ${user}, password: ${pass} }`),
    `127.0.0.1:${stack.ports.submission}`,
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  for (const phase of ['connect', 'tls', 'banner', 'ehlo', 'starttls', 'ehlo_tls', 'auth', 'quit'])
    assert.ok((r.value('probe_smtp_duration_seconds', { phase }) ?? 0) > 0, `phase ${phase}`)
  assert.equal(r.value('probe_smtp_duration_seconds', { phase: 'mail' }), 0, 'not reached: exported as 0')
  assert.equal(r.value('probe_smtp_auth_mechanism_used', { mechanism: 'SCRAM-SHA-256' }), 1)
  for (const mechanism of ['PLAIN', 'LOGIN', 'CRAM-MD5', 'SCRAM-SHA-1', 'SCRAM-SHA-256'])
    assert.equal(r.value('probe_smtp_auth_mechanism_advertised', { stage: 'tls', mechanism }), 1, mechanism)
  assert.equal(r.value('probe_smtp_auth_offered_before_tls'), 0, 'Postfix submission: smtpd_tls_auth_only')
  assert.equal(r.value('probe_smtp_starttls_advertised'), 1)
  assert.equal(r.value('probe_smtp_ehlo_extension_info', { stage: 'tls', extension: 'AUTH' }), 1)
  assert.equal(r.value('probe_smtp_ehlo_extension_info', { stage: 'plain', extension: 'STARTTLS' }), 1)
  assert.equal(r.value('probe_tls_version_info', { version: 'TLS 1.3' }), 1)
  assert.ok(r.samples.some((s) => s.name === 'probe_tls_cipher_info'))
  const info = r.samples.find((s) => s.name === 'probe_ssl_last_chain_info')
  assert.ok(info)
  assert.equal(info.labels['subject'], 'O=mailprobe test,CN=mail.test')
  assert.match(info.labels['subjectalternative'] ?? '', /127\.0\.0\.1/)
  assert.ok((r.value('probe_ssl_earliest_cert_expiry') ?? 0) > Date.now() / 1000 + 86400 * 30)
  assert.equal(r.value('probe_smtp_status_code'), 221)
  assert.equal(r.value('probe_ip_protocol'), 4)
})

for (const mechanism of ['PLAIN', 'LOGIN', 'CRAM-MD5', 'SCRAM-SHA-1', 'SCRAM-SHA-256']) {
  test(`smtp (Postfix): AUTH ${mechanism} works when it is the configured mechanism`, async () => {
    const r = await probe(
      submission(`{ username: ${user}, password: ${pass}, mechanisms: [${mechanism}] }`),
      `127.0.0.1:${stack.ports.submission}`,
    )
    assert.equal(r.value('probe_success'), 1, r.debug)
    assert.equal(r.value('probe_smtp_auth_mechanism_used', { mechanism }), 1)
  })
}

test('smtp (Postfix): implicit TLS on submissions succeeds with TLS metrics', async () => {
  const r = await probe(
    submission(`{ username: ${user}, password: ${pass} }`, 'implicit'),
    `127.0.0.1:${stack.ports.smtps}`,
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.ok((r.value('probe_smtp_duration_seconds', { phase: 'tls' }) ?? 0) > 0)
  assert.equal(r.value('probe_smtp_duration_seconds', { phase: 'starttls' }), 0)
  assert.ok(r.value('probe_ssl_last_chain_expiry_timestamp_seconds') !== undefined)
})

test('smtp (Postfix): a test mail on port 25 is accepted with a queue id and delivered to the local user', async () => {
  const r = await probe(
    `
prober: smtp
allowed_targets: [127.0.0.1]
smtp:
  tls: starttls
  tls_config: { ca_file: ${stack.ca} }
  send: { from: monitor@example.org, to: ${stack.users.alice[0]}, subject: smtp-integration }`,
    `127.0.0.1:${stack.ports.smtp}`,
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  for (const phase of ['mail', 'rcpt', 'data'])
    assert.ok((r.value('probe_smtp_duration_seconds', { phase }) ?? 0) > 0)
  const queueId = /queue_id=([A-F0-9]+)/.exec(r.debug)?.[1]
  assert.ok(queueId, 'Postfix reports a queue id')
  const id = /msg="test mail accepted" message_id=<([^@]+)@/.exec(r.debug)?.[1]
  assert.ok(id)
  // Delivery goes Postfix -> Dovecot LMTP -> Maildir: the mail is there within a few seconds.
  const maildir = join(stack.dir, 'mail', 'mail.test', 'alice', 'Maildir', 'new')
  let found = false
  for (let i = 0; i < 50 && !found; i++) {
    found = readdirSafe(maildir).some((f) =>
      readFileSync(join(maildir, f), 'utf8').includes(`X-Mailprobe-Id: ${id}`),
    )
    if (!found) await new Promise((res) => setTimeout(res, 100))
  }
  assert.ok(found, 'the marked mail reached alice')
})

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir)
  } catch {
    return []
  }
}

test('smtp (Postfix): a recipient that does not exist fails in phase rcpt with 550', async () => {
  const r = await probe(
    `
prober: smtp
allowed_targets: [127.0.0.1]
smtp:
  tls: starttls
  tls_config: { ca_file: ${stack.ca} }
  send: { from: monitor@example.org, to: nobody@mail.test }`,
    `127.0.0.1:${stack.ports.smtp}`,
  )
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'rcpt')
  assert.equal(r.value('probe_smtp_status_code'), 550)
  assert.equal(r.value('probe_smtp_enhanced_status_code'), 511)
})

test('smtp (Postfix): a wrong password fails in phase auth with 535 inside the deadline', async () => {
  const r = await probe(
    submission(`{ username: ${user}, password: wrong }`),
    `127.0.0.1:${stack.ports.submission}`,
  )
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'auth')
  assert.equal(r.value('probe_smtp_status_code'), 535)
  assert.ok(r.seconds < 8)
})

test('smtp (Postfix): without the stack CA the certificate does not verify: phase tls, no AUTH', async () => {
  const r = await probe(
    submission(`{ username: ${user}, password: ${pass} }`).replace(
      `tls_config: { ca_file: ${stack.ca} }`,
      '',
    ),
    `127.0.0.1:${stack.ports.submission}`,
  )
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'tls')
  assert.match(r.debug, /certificate verification failed/)
  assert.doesNotMatch(r.debug, /C: AUTH/)
})

test('smtp (Postfix): a closed port fails in phase connect', async () => {
  const r = await probe(
    submission(`{ username: ${user}, password: ${pass} }`),
    `127.0.0.1:${stack.ports.submission + 7}`,
  )
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'connect')
})

test('smtp (Postfix): STARTTLS without waiting for the session ticket would stall; with the wait EHLO after TLS is fast', async () => {
  // Postfix holds its reply ~40 ms (Nagle + delayed ACK) when the client speaks before the TLS 1.3 ticket
  // arrives. The probe waits for the ticket, so EHLO after TLS must cost about what EHLO before TLS costs.
  const r = await probe(
    submission(`{ username: ${user}, password: ${pass} }`),
    `127.0.0.1:${stack.ports.submission}`,
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.ok((r.value('probe_smtp_duration_seconds', { phase: 'ehlo_tls' }) ?? 1) < 0.03, r.debug)
})
