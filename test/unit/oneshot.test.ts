// `mailprobe_exporter probe`: one probe in the terminal through the same handler as /probe: the waterfall,
// TLS facts, mechanisms and verdict for a person, JSON with --json, and exit status 0, 1 or 2.
/* eslint-disable no-control-regex -- ANSI colour codes (ESC [) are what some of these tests look for */
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { runProbeCommand } from '../helpers/oneshot.ts'
import { certs } from '../servers/certs.ts'
import { scriptedServer } from '../servers/scripted.ts'
import { smtpScript } from '../servers/smtp.ts'
import { render, type OneShotResult } from '../../src/oneshot.ts'

function configFile(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mailprobe-oneshot-'))
  const file = join(dir, 'config.yml')
  writeFileSync(
    file,
    `modules:
  submission:
    prober: smtp
    allowed_targets: [127.0.0.1]
    timeout: 5s
    smtp:
      tls: starttls
      tls_config: { ca_file: ${certs().caFile} }
      auth: { username: probe@mx.test, password: secret }
  banner:
    prober: smtp
    timeout: 5s
    smtp: { tls: none }
`,
  )
  return file
}

const run = runProbeCommand

test('probe command: a successful probe prints transcript, waterfall, TLS, mechanisms and OK, exit 0', async (t) => {
  const server = await scriptedServer(t, smtpScript())
  const config = configFile()
  const r = await run([`--config.file=${config}`, '--module=submission', `--target=127.0.0.1:${server.port}`])
  assert.equal(r.code, 0, r.stdout + r.stderr)
  assert.match(r.stdout, /^mailprobe_exporter probe: module submission, target 127\.0\.0\.1:\d+$/m)
  assert.match(r.stdout, /^Transcript:\n {2}ts=/m)
  for (const phase of ['connect', 'tls', 'banner', 'ehlo', 'starttls', 'ehlo_tls', 'auth', 'quit'])
    assert.match(r.stdout, new RegExp(`^ {2}smtp ${phase} +\\d+\\.\\d{2} ms {2}█+$`, 'm'), `phase ${phase}`)
  assert.match(r.stdout, /^TLS:\n {2}TLS 1\.3, TLS_\w+, certificate expires 20\d\d-/m)
  assert.match(r.stdout, /^ {2}smtp: offered PLAIN LOGIN CRAM-MD5; used CRAM-MD5$/m)
  assert.match(r.stdout, /^OK: submission on 127\.0\.0\.1:\d+ succeeded in \d+\.\d{2} ms$/m)
  assert.doesNotMatch(r.stdout, /\x1b\[/, 'no colours when stdout is not a terminal')
  assert.doesNotMatch(r.stdout, /secret/, 'the password is never printed')
})

test('probe command: a failed probe marks its phase, says why, exit 1; --json says the same', async (t) => {
  const server = await scriptedServer(t, smtpScript({ auth: '535 5.7.8 authentication failed' }))
  const config = configFile()
  const args = [`--config.file=${config}`, '--module=submission', `--target=127.0.0.1:${server.port}`]
  const r = await run(args)
  assert.equal(r.code, 1, r.stdout + r.stderr)
  assert.match(r.stdout, /^ {2}smtp auth +\d+\.\d{2} ms {2}█+ {2}✗ failed here$/m)
  assert.match(r.stdout, /^FAILED: submission on 127\.0\.0\.1:\d+ failed in phase auth after .*535 5\.7\.8/m)

  const json = await run([...args, '--json'])
  assert.equal(json.code, 1)
  const result = JSON.parse(json.stdout) as OneShotResult
  assert.equal(result.success, false)
  assert.equal(result.failed_phase, 'auth')
  assert.match(result.error ?? '', /535/)
  assert.deepEqual(
    result.phases.filter((p) => p.failed).map((p) => [p.prober, p.phase]),
    [['smtp', 'auth']],
  )
  assert.ok(result.phases.some((p) => p.phase === 'tls' && p.seconds > 0))
  assert.equal(result.tls[0]?.version, 'TLS 1.3')
  assert.ok(result.transcript.some((l) => l.includes('probe failed')))
})

test('probe command: bad usage, an unknown module, a refused target or a bad config exit 2 with the reason', async () => {
  const config = configFile()
  const cases: [string[], RegExp][] = [
    [[`--config.file=${config}`], /--module is required/],
    [[`--config.file=${config}`, '--module=nope'], /no module nope in .*\(submission, banner\)/],
    [[`--config.file=${config}`, '--module=banner', '--target=::1:25'], /invalid target/],
    [[`--config.file=${config}`, '--module=submission', '--target=192.0.2.1'], /not in allowed_targets/],
    [[`--config.file=${config}`, '--module=banner', '--no-such-flag'], /Unknown option '--no-such-flag'/],
    [['--config.file=/nonexistent/mailprobe.yml', '--module=banner'], /cannot read/],
  ]
  for (const [args, message] of cases) {
    const r = await run(args)
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`)
    assert.match(r.stderr, message, args.join(' '))
    assert.equal(r.stdout, '', 'nothing on stdout')
  }
})

test('probe command: on a terminal the verdict and the failed phase are in colour', () => {
  const result: OneShotResult = {
    module: 'm',
    target: 'mx.test:25',
    success: false,
    failed_phase: 'ehlo',
    error: '421 go away',
    duration_seconds: 0.004,
    phases: [
      { prober: 'smtp', leg: null, phase: 'banner', seconds: 0.001, failed: false },
      { prober: 'smtp', leg: null, phase: 'ehlo', seconds: 0.002, failed: true },
    ],
    tls: [],
    mechanisms: [],
    transcript: [],
  }
  const plain = render(result, false)
  const coloured = render(result, true)
  assert.doesNotMatch(plain, /\x1b/)
  assert.match(coloured, /\x1b\[31m {2}smtp ehlo +2\.00 ms {2}█+ {2}✗ failed here\x1b\[0m/)
  assert.match(
    coloured,
    /\x1b\[31mFAILED: m on mx\.test:25 failed in phase ehlo after 4\.00 ms: 421 go away\x1b\[0m/,
  )
  assert.match(render({ ...result, success: true, failed_phase: null }, true), /\x1b\[32mOK: /)
})
