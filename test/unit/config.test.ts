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
  'invalid-cert-without-key.yml': [
    '6:9: modules.mx.smtp.tls_config.key_file: cert_file and key_file go together',
  ],
  'invalid-boolean-as-string.yml': [
    '5:19: modules.mx.smtp.pipelining: Invalid input: expected boolean, received string',
  ],
  'invalid-mechanism.yml': [
    '6:63: modules.submission.smtp.auth.mechanisms.0: Invalid option: expected one of "SCRAM-SHA-256"|"SCRAM-SHA-1"|"CRAM-MD5"|"XOAUTH2"|"PLAIN"|"LOGIN"',
  ],
  'invalid-receive-leg-missing.yml': [
    '10:9: modules.route.roundtrip.receive.pop3: receive.protocol is pop3: receive.pop3 (with auth) is required',
  ],
  'invalid-fixed-target.yml': [
    '4:13: modules.submission.target: "smtp://mail.example.com:587" is not a host or host:port',
  ],
  'invalid-plaintext-login.yml': [
    '6:12: modules.mailbox.imap.tls: tls: none would send the password in the clear: set auth.allow_plaintext: true to allow that',
  ],
  'invalid-target-and-allowed.yml': [
    '5:22: modules.mailbox.allowed_targets: give `target` (one fixed target) or `allowed_targets`, not both',
  ],
  'invalid-receive-target.yml': [
    '11:17: modules.route.roundtrip.receive.target: "imap.example.com:99999" has no valid port (1-65535)',
  ],
  'invalid-timeout-too-long.yml': [
    '4:14: modules.mx.timeout: timeout is at most 1h (a probe answers within one scrape)',
  ],
  'invalid-mechanisms-unusable.yml': [
    '9:21: modules.submission.smtp.auth.mechanisms: none of XOAUTH2 can be used: XOAUTH2 and OAUTHBEARER need an oauth2_token, the others a password',
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
      'pop3s_login',
      'roundtrip_imap',
      'smtp_mx',
      'smtp_submission',
    ])
    const smtp = config.modules['smtp_submission']
    assert.ok(smtp?.prober === 'smtp')
    assert.equal(smtp.smtp.auth?.password?.reveal(), 'file-secret', 'one trailing newline dropped')
    assert.equal(smtp.smtp.tls_config.min_version, 'TLS12')
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
