// Config loading: a table of invalid files with the exact message each must give, and the shipped configs.
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inspect } from 'node:util'
import { test } from 'node:test'
import { ConfigError, loadConfig, parseConfig, redactModule } from '../../src/config.ts'
import { parseDuration } from '../../src/duration.ts'
import { Secret } from '../../src/secret.ts'

const fixtures = 'test/fixtures/config'
const NO_LINE_BREAK = 'CR, LF and NUL are not allowed: the value is sent in a protocol line'
const SECRET_BREAK = 'contains CR, LF or NUL, which would break the protocol line it is sent in'
const SENDS_MAIL =
  'this module sends mail: restrict where with `target` or `allowed_targets`, ' +
  'otherwise anyone who can reach the exporter can make it send mail anywhere'
const TLS_OPTIONS = 'Invalid option: expected one of "none"|"starttls"|"starttls_opportunistic"|"implicit"'
/** invalid-line-break-token-env.yml reads it; the secret fixtures' values must not be in any message. */
process.env['MAILPROBE_TEST_TWO_LINE_TOKEN'] = 'token-part\r\nA1 LOGOUT'
const SECRET_PARTS = ['hunter2', 'QUIT', 'token-part', 'LOGOUT']

/** fixture -> the problems it must report, exactly (file:line:column: key path: message). */
const INVALID: Record<string, string[]> = {
  'invalid-unknown-key.yml': ['4:5: modules.mx.smtpp: unknown key "smtpp"'],
  'invalid-prober.yml': [
    "3:13: modules.files.prober: Invalid discriminator value. Expected 'smtp' | 'pop3' | 'imap' | 'roundtrip'",
  ],
  'invalid-tls-mode.yml': [
    '5:12: modules.mx.smtp.tls: Invalid option: expected one of "none"|"starttls"|"starttls_opportunistic"|"implicit"',
  ],
  'invalid-duration.yml': ['4:14: modules.mx.timeout: "10 seconds" is not a duration (e.g. 500ms, 10s, 5m)'],
  'invalid-unrestricted-credentials.yml': [
    '3:5: modules.mailbox.allowed_targets: this module sends credentials: restrict where with `target` or ' +
      '`allowed_targets`, so that nobody can make the exporter send them to a host of their choosing',
  ],
  'invalid-two-passwords.yml': [
    '9:24: modules.submission.smtp.auth.password_file: give only one of password, password_file',
  ],
  'invalid-password-file-missing.yml': [
    '8:24: modules.submission.smtp.auth.password_file: cannot read /nonexistent/mailprobe-password: ENOENT',
  ],
  'invalid-password-env-unset.yml': [
    '8:23: modules.submission.smtp.auth.password_env: environment variable MAILPROBE_TEST_UNSET_VARIABLE is not set',
  ],
  'invalid-retry-implicit.yml': [
    '7:28: modules.submissions.smtp.retry_with_starttls: retry_with_starttls needs tls: none or starttls_opportunistic (tls is implicit)',
  ],
  'invalid-duplicate-key.yml': ['5:5: Map keys must be unique: "timeout"'],
  'invalid-network.yml': [
    '4:41: modules.imap.allowed_targets.1: "10.0.0.0/33" is not a valid network (CIDR)',
  ],
  'invalid-deferred-without-state.yml': [
    '6:7: modules.route.roundtrip.state_file: mode: deferred needs state_file',
  ],
  'invalid-roundtrip-every-problem.yml': [
    `8:23: modules.route.roundtrip.smtp.send.from: ${NO_LINE_BREAK}`,
    '10:9: modules.route.roundtrip.receive.imap: receive.protocol is imap: receive.imap (with auth) is required',
    '5:13: modules.route.target: "mail.example.org:99999" is not a valid target: port must be 1-65535',
  ],
  'invalid-roundtrip-unused-leg.yml': [
    '13:22: modules.route.roundtrip.receive.pop3.tls: tls: none would send the password in the clear: set auth.allow_plaintext: true to allow that',
  ],
  'invalid-cert-without-key.yml': [
    '6:9: modules.mx.smtp.tls_config.key_file: cert_file and key_file go together',
  ],
  'invalid-boolean-as-string.yml': [
    '5:19: modules.mx.smtp.pipelining: Invalid input: expected boolean, received string',
  ],
  'invalid-mechanism.yml': [
    '6:63: modules.submission.smtp.auth.mechanisms.0: Invalid option: expected one of "SCRAM-SHA-256"|"SCRAM-SHA-1"|"CRAM-MD5"|"OAUTHBEARER"|"XOAUTH2"|"PLAIN"|"LOGIN"',
  ],
  'invalid-receive-leg-missing.yml': [
    '10:9: modules.route.roundtrip.receive.pop3: receive.protocol is pop3: receive.pop3 (with auth) is required',
  ],
  'invalid-fixed-target.yml': [
    '4:13: modules.submission.target: "smtp://mail.example.com:587" is not a valid target: a target is host or host:port, not a URL',
  ],
  'invalid-plaintext-login.yml': [
    '6:12: modules.mailbox.imap.tls: tls: none would send the password in the clear: set auth.allow_plaintext: true to allow that',
  ],
  'invalid-target-and-allowed.yml': [
    '5:22: modules.mailbox.allowed_targets: give `target` (one fixed target) or `allowed_targets`, not both',
  ],
  'invalid-receive-target.yml': [
    '11:17: modules.route.roundtrip.receive.target: "imap.example.com:99999" is not a valid target: port must be 1-65535',
  ],
  'invalid-timeout-too-long.yml': [
    '4:14: modules.mx.timeout: timeout is at most 1h (a probe answers within one scrape)',
  ],
  'invalid-mechanisms-unusable.yml': [
    '9:21: modules.submission.smtp.auth.mechanisms: none of XOAUTH2 can be used: XOAUTH2 and OAUTHBEARER need an oauth2_token or oauth2, the others a password',
  ],
  // CR, LF or NUL in anything sent on the wire would end a command early or smuggle in another one.
  'invalid-line-break-ehlo.yml': [`5:13: modules.mx.smtp.ehlo: ${NO_LINE_BREAK}`],
  'invalid-line-break-username.yml': [`7:19: modules.mailbox.imap.auth.username: ${NO_LINE_BREAK}`],
  'invalid-line-break-send.yml': [
    `7:15: modules.send.smtp.send.from: ${NO_LINE_BREAK}`,
    `8:33: modules.send.smtp.send.to.1: ${NO_LINE_BREAK}`,
    `9:18: modules.send.smtp.send.subject: ${NO_LINE_BREAK}`,
    `12:23: modules.send.smtp.send.headers.X-Injected: ${NO_LINE_BREAK}`,
  ],
  'invalid-header-name.yml': [
    '10:11: modules.send.smtp.send.headers."X Spaced": header name "X Spaced" is not an RFC 5322 field name (printable ASCII without space and colon)',
    '11:11: modules.send.smtp.send.headers."X-Colon:": header name "X-Colon:" is not an RFC 5322 field name (printable ASCII without space and colon)',
    '12:11: modules.send.smtp.send.headers."X-Line\\nBreak": header name "X-Line\\nBreak" is not an RFC 5322 field name (printable ASCII without space and colon)',
  ],
  'invalid-line-break-mailbox.yml': [`7:16: modules.mailbox.imap.mailbox: ${NO_LINE_BREAK}`],
  'invalid-line-break-junk-folders.yml': [`6:28: modules.route.roundtrip.junk_folders.1: ${NO_LINE_BREAK}`],
  // Secrets: the message says where the value came from, never the value.
  'invalid-line-break-password.yml': [
    `8:19: modules.submission.smtp.auth.password: the password ${SECRET_BREAK}`,
  ],
  'invalid-line-break-password-file.yml': [
    `9:24: modules.mailbox.pop3.auth.password_file: the password in ${fixtures}/two-line-password.txt ${SECRET_BREAK} (only one trailing newline is dropped)`,
  ],
  'invalid-line-break-token-env.yml': [
    `8:27: modules.mailbox.imap.auth.oauth2_token_env: environment variable MAILPROBE_TEST_TWO_LINE_TOKEN ${SECRET_BREAK}`,
  ],
  'invalid-poll-interval.yml': [
    '6:22: modules.route.roundtrip.poll_interval: poll_interval is at least 10ms (a tighter loop only loads the server)',
    '7:19: modules.route.roundtrip.scan_limit: scan_limit is at most 1000 (each poll reads that many messages)',
  ],
  'invalid-sweep-before-lost.yml': [
    '9:20: modules.route.roundtrip.sweep_after: sweep_after (600s) must not be shorter than lost_after (3600s): a mail still awaited would be deleted before it could be found or counted as lost',
  ],
  'invalid-tls-max-below-min.yml': [
    '7:22: modules.mx.smtp.tls_config.max_version: max_version (TLS12) is below min_version (TLS13)',
  ],
  'invalid-tls-max-version.yml': [
    '5:34: modules.mx.smtp.tls_config.max_version: Invalid option: expected one of "TLS10"|"TLS11"|"TLS12"|"TLS13"',
  ],
  'invalid-unrestricted-send.yml': [`3:5: modules.relay_test.allowed_targets: ${SENDS_MAIL}`],
  'invalid-unrestricted-roundtrip.yml': [`3:5: modules.route.allowed_targets: ${SENDS_MAIL}`],
  'invalid-min-interval.yml': [
    '4:19: modules.mx.min_interval: "-1s" is not a duration (e.g. 500ms, 10s, 5m)',
    '8:19: modules.login.min_interval: "soon" is not a duration (e.g. 500ms, 10s, 5m)',
  ],
  // Merge keys: a problem in shared settings points at where they are written, and says where they were merged in.
  'invalid-merged-settings.yml': [
    `7:12: modules.submission.smtp.tls: ${TLS_OPTIONS}`,
    '11:14: modules.submission_backup.timeout: "5 seconds" is not a duration (e.g. 500ms, 10s, 5m)',
    `7:12: modules.submission_backup.smtp.tls: ${TLS_OPTIONS} (merged in with <<: at 9:5)`,
  ],
  'invalid-merged-unknown-key.yml': [
    '6:7: modules.mx.smtp.tls_confg: unknown key "tls_confg"',
    `11:13: modules.mx_named.smtp.ehlo: ${NO_LINE_BREAK}`,
    '6:7: modules.mx_named.smtp.tls_confg: unknown key "tls_confg" (merged in with <<: at 10:7)',
  ],
  'invalid-no-modules.yml': [
    '1:1: modules: Invalid input: expected record, received undefined',
    '1:1: module: unknown key "module"',
  ],
}

for (const [file, expected] of Object.entries(INVALID)) {
  test(`config: ${file} is rejected with file, line and key`, () => {
    const path = join(fixtures, file)
    assert.throws(
      () => loadConfig(path),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError)
        assert.deepEqual(
          err.problems,
          expected.map((p) => `${path}:${p}`),
        )
        for (const part of SECRET_PARTS) assert.ok(!err.message.includes(part), `${part} in ${err.message}`)
        return true
      },
    )
  })
}

test('config: every invalid fixture is in the table', async () => {
  const { readdirSync } = await import('node:fs')
  const files = readdirSync(fixtures).filter((f) => f.startsWith('invalid-'))
  assert.deepEqual(files.sort(), Object.keys(INVALID).sort())
})

test('config: --config.check exits 1 and prints the problems, 0 for a valid file', () => {
  const bad = spawnSync(
    'npx',
    ['tsx', 'src/main.ts', '--config.check', `--config.file=${fixtures}/invalid-tls-mode.yml`],
    {
      encoding: 'utf8',
    },
  )
  assert.equal(bad.status, 1)
  assert.match(bad.stderr, /invalid-tls-mode\.yml:5:12: modules\.mx\.smtp\.tls: Invalid option/)
  const good = execFileSync(
    'npx',
    ['tsx', 'src/main.ts', '--config.check', '--config.file=config/mailprobe.yml'],
    {
      encoding: 'utf8',
    },
  )
  assert.match(good, /config\/mailprobe\.yml: ok, 3 modules/)
})

test('config: the default config and the commented example of every option load', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mailprobe-config-'))
  const secretFile = join(dir, 'monitor.password')
  writeFileSync(secretFile, 'file-secret\n')
  const example = readFileSync('config/example.yml', 'utf8').replaceAll(
    '/etc/mailprobe/monitor.password',
    secretFile,
  )
  process.env['MAILPROBE_POP3_PASSWORD'] = 'env-secret'
  try {
    const config = parseConfig(example, 'example.yml')
    assert.deepEqual(Object.keys(config.modules).sort(), [
      'imap_login',
      'imap_m365',
      'pop3s_login',
      'roundtrip_imap',
      'smtp_mx',
      'smtp_submission',
      'smtp_submission_eu',
    ])
    const smtp = config.modules['smtp_submission']
    assert.ok(smtp?.prober === 'smtp')
    assert.equal(smtp.smtp.auth?.password?.reveal(), 'file-secret', 'one trailing newline dropped')
    assert.equal(smtp.smtp.tls_config.min_version, 'TLS12')
    assert.equal(smtp.smtp.tls_config.max_version, 'TLS13')
    assert.equal(smtp.min_interval, 10, 'it sends mail')
    const eu = config.modules['smtp_submission_eu']
    assert.ok(eu?.prober === 'smtp', 'merged from smtp_submission')
    assert.equal(eu.smtp.ehlo, 'probe.eu.example.com')
    assert.equal(eu.smtp.auth?.password?.reveal(), 'file-secret')
    assert.equal(eu.smtp.send?.from, 'monitor@example.com')
    assert.deepEqual(JSON.parse(JSON.stringify(eu.allowed_targets)), ['mail.eu.example.com:587'])
    const pop3 = config.modules['pop3s_login']
    assert.equal(pop3?.prober === 'pop3' ? pop3.pop3.auth.password?.reveal() : undefined, 'env-secret')
  } finally {
    delete process.env['MAILPROBE_POP3_PASSWORD']
  }
  assert.equal(Object.keys(loadConfig('config/mailprobe.yml').modules).length, 3)
})

test('config: defaults apply (timeout 10 s, tls starttls, ip4 with fallback)', () => {
  const config = parseConfig('modules:\n  mx:\n    prober: smtp\n', 'x.yml')
  const mx = config.modules['mx']
  assert.ok(mx?.prober === 'smtp')
  assert.equal(mx.timeout, 10)
  assert.equal(mx.smtp.tls, 'starttls')
  assert.equal(mx.smtp.preferred_ip_protocol, 'ip4')
  assert.equal(mx.smtp.ip_protocol_fallback, true)
  assert.equal(mx.smtp.pipelining, false)
})

test('config: min_interval defaults to 10s for modules that send mail, 1s for other logins, else 0', () => {
  const auth = '{ username: probe@mx.test, password: secret }'
  const send = '{ from: probe@mx.test, to: probe@mx.test }'
  const receive = `{ protocol: imap, target: imap.mx.test, imap: { auth: ${auth} } }`
  const config = parseConfig(
    `modules:
  plain: { prober: smtp }
  login: { prober: smtp, target: mx.test, smtp: { auth: ${auth} } }
  send: { prober: smtp, target: mx.test, smtp: { send: ${send} } }
  send_login: { prober: smtp, target: mx.test, smtp: { auth: ${auth}, send: ${send} } }
  pop3: { prober: pop3, target: mx.test, pop3: { auth: ${auth} } }
  imap: { prober: imap, target: mx.test, imap: { auth: ${auth} } }
  roundtrip: { prober: roundtrip, target: mx.test, roundtrip: { smtp: { send: ${send} }, receive: ${receive} } }
  off: { prober: roundtrip, target: mx.test, min_interval: 0s, roundtrip: { smtp: { send: ${send} }, receive: ${receive} } }
  longer: { prober: smtp, min_interval: 1m }
  seconds: { prober: imap, target: mx.test, min_interval: 2.5, imap: { auth: ${auth} } }
`,
    'x.yml',
  )
  const intervals = Object.fromEntries(
    Object.entries(config.modules).map(([name, m]) => [name, m.min_interval]),
  )
  assert.deepEqual(intervals, {
    plain: 0,
    login: 1,
    send: 10,
    send_login: 10,
    pop3: 1,
    imap: 1,
    roundtrip: 10,
    off: 0,
    longer: 60,
    seconds: 2.5,
  })
})

test('config: tls_config carries min_version and max_version; equal versions are allowed', () => {
  const config = parseConfig(
    'modules:\n  mx:\n    prober: smtp\n    smtp:\n      tls_config: { min_version: TLS12, max_version: TLS12 }\n' +
      '  any:\n    prober: smtp\n',
    'x.yml',
  )
  const mx = config.modules['mx']
  assert.ok(mx?.prober === 'smtp')
  assert.equal(mx.smtp.tls_config.min_version, 'TLS12')
  assert.equal(mx.smtp.tls_config.max_version, 'TLS12')
  const any = config.modules['any']
  assert.ok(any?.prober === 'smtp')
  assert.equal(any.smtp.tls_config.max_version, undefined)
})

test('config: the body may have line breaks, header names and values that are fine load', () => {
  const config = parseConfig(
    `modules:
  send:
    prober: smtp
    target: mx.test
    smtp:
      send:
        from: probe@mx.test
        to: probe@mx.test
        subject: "tab\\tis fine"
        headers: { X-Monitoring: mailprobe, "X-Odd!#$%&'*+.^_\`|~": "value: with colon" }
        body: "line one\\r\\nline two\\n\\n.leading dot\\n"
`,
    'x.yml',
  )
  const send = config.modules['send']
  assert.ok(send?.prober === 'smtp')
  const mail = send.smtp.send
  assert.ok(mail)
  assert.equal(mail.subject, 'tab\tis fine')
  assert.equal(mail.body, 'line one\r\nline two\n\n.leading dot\n')
  assert.deepEqual(mail.headers, {
    'X-Monitoring': 'mailprobe',
    "X-Odd!#$%&'*+.^_`|~": 'value: with colon',
  })
})

test('config: modules share settings through YAML merge keys, own keys winning', () => {
  const config = loadConfig(join(fixtures, 'merge-keys.yml'))
  const { imap_login: login, imap_archive: archive, imap_other: other } = config.modules
  assert.ok(login?.prober === 'imap' && archive?.prober === 'imap' && other?.prober === 'imap')
  assert.equal(archive.timeout, 5, 'merged from imap_login')
  assert.deepEqual(archive.allowed_targets, login.allowed_targets)
  assert.equal(archive.imap.mailbox, 'Archive', 'its own key')
  assert.equal(archive.imap.tls, 'implicit', 'merged one level down (<<: *imap)')
  assert.equal(archive.imap.tls_config.min_version, 'TLS12')
  assert.equal(archive.imap.auth.password?.reveal(), 'secret')
  assert.equal(login.imap.mailbox, 'INBOX', 'the anchored module is unchanged')
  assert.equal(other.timeout, 7, 'in <<: [a, b] the first map wins')
  assert.equal(other.min_interval, 0)
  assert.equal(login.min_interval, 1)
})

test('config: YAML that cannot be built is a config error with its position', () => {
  const cases: [string, string][] = [
    ['modules:\n  a:\n    <<: 5\n    prober: smtp\n', 'x.yml:3:9: Merge sources must be maps or map aliases'],
    ['modules:\n  a: *nope\n', 'x.yml:2:6: Unresolved alias (the anchor must be set before the alias): nope'],
  ]
  for (const [text, problem] of cases)
    assert.throws(
      () => parseConfig(text, 'x.yml'),
      (err: unknown) =>
        err instanceof ConfigError && err.problems.length === 1 && err.problems[0] === problem,
      text,
    )
  const bomb = ['a: &a [x, x, x, x, x, x, x, x, x]']
  for (const name of ['b', 'c', 'd', 'e', 'f'])
    bomb.push(
      `${name}: &${name} [${Array(9)
        .fill(`*${String.fromCharCode(name.charCodeAt(0) - 1)}`)
        .join(', ')}]`,
    )
  assert.throws(
    () => parseConfig(`${bomb.join('\n')}\nmodules: {}\n`, 'x.yml'),
    (err: unknown) => err instanceof ConfigError && /resource exhaustion/.test(err.problems[0] ?? ''),
  )
})

test('config: secrets print as <secret> in JSON, strings, inspect and the redacted module', () => {
  const secret = new Secret('hunter2')
  assert.equal(JSON.stringify({ secret }), '{"secret":"<secret>"}')
  assert.equal(String(secret), '<secret>')
  assert.equal(inspect({ secret }), '{ secret: <secret> }')
  assert.equal(secret.reveal(), 'hunter2')
  const config = parseConfig(
    'modules:\n  s:\n    prober: smtp\n    target: mx.test\n    smtp:\n      auth: { username: u, password: hunter2 }\n',
    'x.yml',
  )
  const text = JSON.stringify(redactModule(config.modules['s']!))
  assert.doesNotMatch(text, /hunter2/)
  assert.match(text, /"password":"<secret>"/)
})

test('duration: Prometheus-style durations parse to seconds, anything else is undefined', () => {
  assert.equal(parseDuration('10s'), 10)
  assert.equal(parseDuration('500ms'), 0.5)
  assert.equal(parseDuration('1h30m'), 5400)
  assert.equal(parseDuration('1.5s'), 1.5)
  for (const bad of ['', '10', '10 s', 's', '5x', '1s2']) assert.equal(parseDuration(bad), undefined, bad)
})
