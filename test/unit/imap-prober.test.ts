// imap prober against in-process servers: scripted faults in every phase, certificates, credential rules, openImap.
import assert from 'node:assert/strict'
import net from 'node:net'
import { after, test } from 'node:test'
import { parseConfig, type ImapModule } from '../../src/config.ts'
import { DeadlineError, PhaseError, findCause } from '../../src/errors.ts'
import { openImap } from '../../src/dialogues/imap.ts'
import { probeImap } from '../../src/probers/imap/index.ts'
import { certs } from '../servers/certs.ts'
import { imapScript, TLS_CAPS } from '../servers/imap.ts'
import { scriptedServer, silentServer } from '../servers/scripted.ts'
import { testContext } from '../helpers/context.ts'
import { metricValue } from '../helpers/metrics.ts'
import { probe } from '../helpers/probe.ts'

// A late imapflow error without a listener, or a rejection nobody awaits, must never happen.
const stray: unknown[] = []
process.on('unhandledRejection', (err) => stray.push(err))
process.on('uncaughtException', (err) => stray.push(err))
after(() => {
  assert.deepEqual(stray, [])
})

const ca = () => certs().caFile
const USER = '{ username: probe@mx.test, password: s3cr3t-pw }'
function imapModule(options: { tls?: string; auth?: string; extra?: string; timeout?: string } = {}) {
  return `
prober: imap
allowed_targets: [127.0.0.1]
timeout: ${options.timeout ?? '5s'}
imap:
  tls: ${options.tls ?? 'starttls'}
  tls_config: { ca_file: ${ca()} }
  auth: ${options.auth ?? USER}
  ${options.extra ?? ''}`
}
const target = (port: number) => `127.0.0.1:${port}`
/** Whether any login command (or its payload) reached the server. */
const sentCredentials = (received: readonly string[]) =>
  received.some((l) => /^\S+ (AUTHENTICATE|LOGIN)\b/i.test(l))

/** Calls the prober directly (no handler race), so a test sees whether the prober itself stops in time. */
async function runDirect(moduleYaml: string, port: number, timeoutMs: number) {
  const body = moduleYaml
    .replace(/^\n+/, '')
    .split('\n')
    .map((l) => '    ' + l)
    .join('\n')
  const module = parseConfig(`modules:\n  m:\n${body}\n`, 'test.yml').modules['m'] as ImapModule
  const ctx = testContext(timeoutMs)
  const start = performance.now()
  const error = await probeImap({ host: '127.0.0.1', port }, module, ctx).then(
    () => undefined,
    (err: unknown) => err,
  )
  return { error, seconds: (performance.now() - start) / 1000, ctx }
}

test('imap: STARTTLS + AUTHENTICATE PLAIN + EXAMINE succeeds, times every phase and reports the facts', async (t) => {
  const server = await scriptedServer(t, imapScript())
  const r = await probe(imapModule(), target(server.port))
  assert.equal(r.value('probe_success'), 1, r.debug)
  for (const phase of [
    'resolve',
    'connect',
    'tls',
    'banner',
    'capability',
    'starttls',
    'capability_tls',
    'auth',
    'select',
    'logout',
  ])
    assert.ok(
      (r.value('probe_imap_duration_seconds', { phase }) ?? 0) > 0,
      `phase ${phase} was not timed: ${r.debug}`,
    )
  assert.equal(r.value('probe_imap_mailbox_messages'), 3)
  assert.equal(r.value('probe_imap_mailbox_recent'), 1)
  assert.equal(r.value('probe_imap_mailbox_unseen'), 2)
  assert.equal(r.value('probe_imap_capability_info', { stage: 'plain', capability: 'STARTTLS' }), 1)
  assert.equal(r.value('probe_imap_capability_info', { stage: 'tls', capability: 'AUTH=PLAIN' }), 1)
  assert.equal(r.value('probe_imap_capability_info', { stage: 'tls', capability: 'STARTTLS' }), undefined)
  assert.equal(r.value('probe_imap_starttls_advertised'), 1)
  assert.equal(r.value('probe_imap_logindisabled_before_tls'), 1)
  assert.equal(r.value('probe_imap_auth_offered_before_tls'), 0)
  assert.equal(r.value('probe_imap_auth_mechanism_used', { mechanism: 'PLAIN' }), 1)
  assert.equal(r.value('probe_tls_version_info', { version: 'TLS 1.3' }), 1)
  assert.ok((r.value('probe_ssl_earliest_cert_expiry') ?? 0) > Date.now() / 1000)
  // Read-only: EXAMINE, never SELECT, and nothing that changes flags or removes mail.
  assert.ok(server.received.some((l) => / EXAMINE INBOX$/.test(l)))
  assert.ok(
    !server.received.some((l) => /^\S+ (SELECT|STORE|UID|EXPUNGE|COPY|MOVE)\b/i.test(l)),
    server.received.join('\n'),
  )
  // The username and password never reach the debug text, not even in base64.
  assert.ok(!r.debug.includes('s3cr3t-pw'))
  assert.ok(!r.debug.includes(Buffer.from('\0probe@mx.test\0').toString('base64').slice(0, 12)), r.debug)
  assert.deepEqual(server.errors, [])
})

test("imap: ID names only mailprobe_exporter and its version, none of imapflow's vendor fields", async (t) => {
  const server = await scriptedServer(t, imapScript())
  const r = await probe(imapModule(), target(server.port))
  assert.equal(r.value('probe_success'), 1, r.debug)
  const ids = server.received.filter((l) => /^\S+ ID /.test(l))
  // imapflow sends ID before the login and again after it
  assert.ok(ids.length > 0, server.received.join('\n'))
  for (const id of ids) assert.match(id, /^\S+ ID \("name" "mailprobe_exporter" "version" "\d+\.\d+\.\d+"\)$/)
})

test('imap: implicit TLS with mailbox_check status reads the counts from STATUS', async (t) => {
  const server = await scriptedServer(t, imapScript({ greeting: `* OK [CAPABILITY ${TLS_CAPS}] ready` }), {
    implicitTls: certs().good,
  })
  const r = await probe(imapModule({ tls: 'implicit', extra: 'mailbox_check: status' }), target(server.port))
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.ok((r.value('probe_imap_duration_seconds', { phase: 'tls' }) ?? 0) > 0)
  assert.equal(r.value('probe_imap_duration_seconds', { phase: 'starttls' }), 0)
  assert.equal(r.value('probe_imap_mailbox_messages'), 5)
  assert.equal(r.value('probe_imap_mailbox_recent'), 0)
  assert.equal(r.value('probe_imap_mailbox_unseen'), 4)
  assert.equal(r.value('probe_imap_capability_info', { stage: 'tls', capability: 'AUTH=LOGIN' }), 1)
  // No cleartext list was seen, so there is nothing to say about it.
  assert.equal(r.value('probe_imap_starttls_advertised'), undefined)
  assert.ok(server.received.some((l) => / STATUS INBOX /.test(l)))
  assert.ok(!server.received.some((l) => / (EXAMINE|SELECT) /.test(l)))
})

test('imap: a silent server fails in phase banner within the deadline', async (t) => {
  const server = await silentServer(t)
  const r = await probe(imapModule({ timeout: '1s' }), target(server.port))
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'banner')
  assert.ok(r.seconds < 1.3, `took ${r.seconds}s`)
  const direct = await runDirect(imapModule({ timeout: '1s' }), server.port, 1000)
  assert.ok(direct.seconds < 1.3, `the prober itself took ${direct.seconds}s`)
  assert.equal(findCause(direct.error, PhaseError)?.phase, 'banner')
  assert.ok(findCause(direct.error, DeadlineError))
})

test('imap: a BYE greeting fails in phase banner with the server text', async (t) => {
  const server = await scriptedServer(t, imapScript({ greeting: '* BYE Too many connections from your IP' }))
  const r = await probe(imapModule(), target(server.port))
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'banner')
  assert.match(r.debug, /Too many connections/)
})

test('imap: NO to the login fails in phase auth with the server text', async (t) => {
  const server = await scriptedServer(
    t,
    imapScript({ login: { '*': 'NO [AUTHENTICATIONFAILED] Authentication failed.' } }),
  )
  const r = await probe(imapModule(), target(server.port))
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'auth')
  assert.match(r.debug, /AUTHENTICATIONFAILED/)
  assert.equal(server.connections, 1) // no try_all_mechanisms: no second attempt
})

test('imap: BAD or NO to EXAMINE, and NO to STATUS, fail in phase select with the server text', async (t) => {
  for (const [faults, extra, text] of [
    [{ examine: 'BAD Error in IMAP command EXAMINE' }, '', /Error in IMAP command/],
    [{ examine: "NO [NONEXISTENT] Mailbox doesn't exist: INBOX" }, '', /NONEXISTENT/],
    [{ status: 'NO [SERVERBUG] Internal error' }, 'mailbox_check: status', /SERVERBUG/],
  ] as const) {
    const server = await scriptedServer(t, imapScript(faults))
    const r = await probe(imapModule({ extra }), target(server.port))
    assert.equal(r.value('probe_success'), 0, JSON.stringify(faults))
    assert.equal(r.failedPhase, 'select', JSON.stringify(faults))
    assert.match(r.debug, text)
  }
})

test('imap: a BYE instead of the EXAMINE answer fails in phase select with the server text', async (t) => {
  const server = await scriptedServer(t, imapScript({ byeOnExamine: '* BYE Server shutting down' }))
  const r = await probe(imapModule(), target(server.port))
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'select')
  assert.match(r.debug, /Server shutting down/)
})

test('imap: tls starttls fails in phase starttls when the server does not offer it, sending no credentials', async (t) => {
  const server = await scriptedServer(t, imapScript({ caps: 'IMAP4rev1 ID AUTH=PLAIN' }))
  const r = await probe(imapModule(), target(server.port))
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'starttls')
  assert.match(r.debug, /does not offer STARTTLS/)
  assert.equal(r.value('probe_imap_starttls_advertised'), 0)
  assert.ok(!sentCredentials(server.received))
})

test('imap: NO to STARTTLS fails in phase starttls with the server text', async (t) => {
  const server = await scriptedServer(t, imapScript({ starttls: 'NO TLS is not available right now' }))
  const r = await probe(imapModule(), target(server.port))
  assert.equal(r.failedPhase, 'starttls')
  assert.match(r.debug, /not available right now/)
  assert.ok(!sentCredentials(server.received))
})

test('imap: a PREAUTH greeting needs no login, but tls starttls refuses it in phase starttls', async (t) => {
  const preauth = imapScript({ greeting: '* PREAUTH [CAPABILITY IMAP4rev1 ID NAMESPACE] welcome back' })
  const plain = await scriptedServer(t, preauth)
  const auth = '{ username: probe@mx.test, password: s3cr3t-pw, allow_plaintext: true }'
  const r = await probe(imapModule({ tls: 'none', auth }), target(plain.port))
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_imap_mailbox_messages'), 3)
  assert.ok(!sentCredentials(plain.received))
  assert.ok(!r.samples.some((s) => s.name === 'probe_imap_auth_mechanism_used'))
  const required = await scriptedServer(t, preauth)
  const r2 = await probe(imapModule(), target(required.port))
  assert.equal(r2.failedPhase, 'starttls', r2.debug)
  assert.match(r2.debug, /PREAUTH/)
})

test('imap: a failed STARTTLS handshake or a bad certificate fails in phase tls, sending no credentials', async (t) => {
  const cases = [
    ['expired', { cert: certs().expired }, /CERT_HAS_EXPIRED/],
    ['wrong name', { cert: certs().wrongName }, /ERR_TLS_CERT_ALTNAME_INVALID|altname|does not match/i],
    ['self-signed', { cert: certs().selfSigned }, /SELF_SIGNED/],
    ['dropped handshake', { starttls: 'drop' }, /socket|disconnected|ECONNRESET|closed/i],
  ] as const
  for (const [name, faults, reason] of cases) {
    const server = await scriptedServer(t, imapScript(faults))
    const r = await probe(imapModule(), target(server.port))
    assert.equal(r.value('probe_success'), 0, name)
    assert.equal(r.failedPhase, 'tls', `${name}: ${r.debug}`)
    assert.match(r.debug, reason, name)
    assert.ok(!sentCredentials(server.received), name)
    if (name !== 'dropped handshake')
      assert.ok(
        (r.value('probe_ssl_earliest_cert_expiry') ?? 0) > 0,
        `${name}: certificate facts are recorded`,
      )
  }
})

test('imap: insecure_skip_verify completes the handshake for the facts but sends no credentials', async (t) => {
  const server = await scriptedServer(t, imapScript({ cert: certs().selfSigned }))
  const r = await probe(
    imapModule().replace(`tls_config: { ca_file: ${ca()} }`, 'tls_config: { insecure_skip_verify: true }'),
    target(server.port),
  )
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'auth')
  assert.match(r.debug, /did not verify/)
  assert.ok((r.value('probe_imap_duration_seconds', { phase: 'capability_tls' }) ?? 0) > 0)
  assert.equal(r.value('probe_tls_version_info', { version: 'TLS 1.3' }), 1)
  assert.ok(!sentCredentials(server.received))
})

test('imap: credentials are refused without TLS unless allow_plaintext', async (t) => {
  const caps = 'IMAP4rev1 ID NAMESPACE AUTH=PLAIN'
  await assert.rejects(
    probe(imapModule({ tls: 'none' }), target(1)),
    /imap\.tls: tls: none would send the password in the clear/,
  )
  // At run time: an opportunistic session against a server without STARTTLS ends up in the clear.
  const refused = await scriptedServer(t, imapScript({ caps }))
  const r1 = await probe(imapModule({ tls: 'starttls_opportunistic' }), target(refused.port))
  assert.equal(r1.failedPhase, 'auth')
  assert.match(r1.debug, /without TLS/)
  assert.ok(!sentCredentials(refused.received))

  const allowed = await scriptedServer(t, imapScript({ caps }))
  const r2 = await probe(
    imapModule({
      tls: 'none',
      auth: '{ username: probe@mx.test, password: s3cr3t-pw, allow_plaintext: true }',
    }),
    target(allowed.port),
  )
  assert.equal(r2.value('probe_success'), 1, r2.debug)
  assert.equal(r2.value('probe_imap_auth_offered_before_tls'), 1)
  assert.equal(r2.value('probe_imap_starttls_advertised'), 0)
  assert.ok(!allowed.received.some((l) => / STARTTLS$/.test(l)))
})

test('imap: starttls_opportunistic goes on in cleartext only with allow_plaintext', async (t) => {
  const caps = 'IMAP4rev1 ID NAMESPACE AUTH=PLAIN'
  const server = await scriptedServer(t, imapScript({ caps }))
  const r = await probe(imapModule({ tls: 'starttls_opportunistic' }), target(server.port))
  assert.equal(r.failedPhase, 'auth')
  assert.ok(!sentCredentials(server.received))
  const offered = await scriptedServer(t, imapScript())
  const r2 = await probe(imapModule({ tls: 'starttls_opportunistic' }), target(offered.port))
  assert.equal(r2.value('probe_success'), 1, r2.debug)
  assert.ok((r2.value('probe_imap_duration_seconds', { phase: 'starttls' }) ?? 0) > 0)
})

test('imap: LOGINDISABLED is respected: no LOGIN command, even when IMAP-LOGIN is asked for', async (t) => {
  const plaintext = '{ username: probe@mx.test, password: s3cr3t-pw, allow_plaintext: true'
  for (const auth of [`${plaintext} }`, `${plaintext}, mechanisms: [IMAP-LOGIN] }`]) {
    const server = await scriptedServer(t, imapScript({ caps: 'IMAP4rev1 ID NAMESPACE LOGINDISABLED' }))
    const r = await probe(imapModule({ tls: 'none', auth }), target(server.port))
    assert.equal(r.value('probe_success'), 0)
    assert.equal(r.failedPhase, 'auth')
    assert.match(r.debug, /err=.*LOGINDISABLED: no LOGIN command/) // our rule, before imapflow's own
    assert.equal(r.value('probe_imap_logindisabled_before_tls'), 1)
    assert.equal(r.value('probe_imap_auth_offered_before_tls'), 0)
    assert.ok(!sentCredentials(server.received))
  }
})

test('imap: CRAM-MD5 and SCRAM are reported as advertised but not usable', async (t) => {
  const server = await scriptedServer(
    t,
    imapScript({ capsTls: 'IMAP4rev1 ID NAMESPACE LOGINDISABLED AUTH=CRAM-MD5 AUTH=SCRAM-SHA-256' }),
  )
  const r = await probe(imapModule(), target(server.port))
  assert.equal(r.failedPhase, 'auth')
  assert.match(r.debug, /no usable mechanism/)
  for (const mechanism of ['CRAM-MD5', 'SCRAM-SHA-256'])
    assert.equal(
      r.value('probe_imap_auth_mechanism_advertised', { stage: 'tls', mechanism, usable: 'false' }),
      1,
      mechanism,
    )
  assert.ok(!sentCredentials(server.received))
})

test('imap: each mechanism can be forced and is reported as used', async (t) => {
  const cases = [
    ['PLAIN', /^\S+ AUTHENTICATE PLAIN$/],
    ['LOGIN', /^\S+ AUTHENTICATE LOGIN$/],
    ['IMAP-LOGIN', /^\S+ LOGIN "?probe@mx\.test"? /],
  ] as const
  for (const [mechanism, sent] of cases) {
    const server = await scriptedServer(
      t,
      imapScript({ capsTls: 'IMAP4rev1 ID NAMESPACE AUTH=PLAIN AUTH=LOGIN' }),
    )
    const r = await probe(
      imapModule({ auth: `{ username: probe@mx.test, password: s3cr3t-pw, mechanisms: [${mechanism}] }` }),
      target(server.port),
    )
    assert.equal(r.value('probe_success'), 1, `${mechanism}: ${r.debug}`)
    assert.equal(r.value('probe_imap_auth_mechanism_used', { mechanism }), 1, mechanism)
    assert.ok(
      server.received.some((l) => sent.test(l)),
      `${mechanism}: ${server.received.join('\n')}`,
    )
  }
})

test('imap: XOAUTH2 can be forced over OAUTHBEARER with an oauth2_token', async (t) => {
  const server = await scriptedServer(
    t,
    imapScript({ capsTls: 'IMAP4rev1 ID NAMESPACE AUTH=OAUTHBEARER AUTH=XOAUTH2 AUTH=PLAIN' }),
  )
  const r = await probe(
    imapModule({ auth: '{ username: probe@mx.test, oauth2_token: tok3n, mechanisms: [XOAUTH2] }' }),
    target(server.port),
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_imap_auth_mechanism_used', { mechanism: 'XOAUTH2' }), 1)
  const payload = server.received[server.received.findIndex((l) => /AUTHENTICATE XOAUTH2$/.test(l)) + 1] ?? ''
  assert.equal(Buffer.from(payload, 'base64').toString(), 'user=probe@mx.test\x01auth=Bearer tok3n\x01\x01')
  assert.ok(!r.debug.includes('tok3n'))
})

test('imap: try_all_mechanisms tries the next mechanism on a new connection after a refusal', async (t) => {
  const server = await scriptedServer(
    t,
    imapScript({
      capsTls: 'IMAP4rev1 ID NAMESPACE AUTH=PLAIN AUTH=LOGIN',
      login: { PLAIN: 'NO [AUTHENTICATIONFAILED] PLAIN is broken here' },
    }),
  )
  const r = await probe(
    imapModule({ auth: '{ username: probe@mx.test, password: s3cr3t-pw, try_all_mechanisms: true }' }),
    target(server.port),
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(server.connections, 2)
  assert.equal(r.value('probe_imap_auth_mechanism_used', { mechanism: 'LOGIN' }), 1)
  assert.equal(r.value('probe_imap_auth_mechanism_used', { mechanism: 'PLAIN' }), undefined)

  const none = await scriptedServer(t, imapScript({ login: { '*': 'NO [AUTHENTICATIONFAILED] nope' } }))
  const r2 = await probe(
    imapModule({ auth: '{ username: probe@mx.test, password: s3cr3t-pw, try_all_mechanisms: true }' }),
    target(none.port),
  )
  assert.equal(r2.failedPhase, 'auth')
  assert.equal(none.connections, 3) // PLAIN, LOGIN, then the LOGIN command (LOGINDISABLED is only before TLS)
  assert.match(r2.debug, /nope/)
})

test('imap: a server that hangs after login fails in phase select at the deadline', async (t) => {
  const server = await scriptedServer(t, imapScript({ hang: 'LIST' }))
  const r = await probe(imapModule({ timeout: '1s' }), target(server.port))
  assert.equal(r.failedPhase, 'select')
  assert.ok(r.seconds < 1.3, `took ${r.seconds}s`)
  const direct = await runDirect(imapModule({ timeout: '1s' }), server.port, 1000)
  assert.ok(direct.seconds < 1.3, `the prober itself took ${direct.seconds}s`)
  assert.equal(findCause(direct.error, PhaseError)?.phase, 'select')
  assert.equal(direct.ctx.phases.current, 'select')
})

test('imap: a server that hangs on the login fails in phase auth at the deadline', async (t) => {
  const server = await scriptedServer(t, imapScript({ hang: 'AUTHENTICATE' }))
  const direct = await runDirect(imapModule({ timeout: '1s' }), server.port, 1000)
  assert.ok(direct.seconds < 1.3, `the prober itself took ${direct.seconds}s`)
  assert.equal(findCause(direct.error, PhaseError)?.phase, 'auth')
})

test(
  'imap: openImap returns a logged-in client, labels its facts, leaves later commands to the caller and closes at the deadline',
  { timeout: 10_000 },
  async (t) => {
    const server = await scriptedServer(t, imapScript({ hang: 'NOOP' }))
    const module = parseConfig(
      `modules:\n  m:\n${imapModule()
        .replace(/^\n+/, '')
        .split('\n')
        .map((l) => '    ' + l)
        .join('\n')}\n`,
      'test.yml',
    ).modules['m'] as ImapModule
    const controller = new AbortController()
    const ctx = testContext(5000, { signal: controller.signal })
    const { registry } = ctx
    const imap = await openImap({ host: '127.0.0.1', port: server.port }, module.imap, ctx, {
      leg: 'receive',
    })
    assert.equal(imap.mechanism, 'PLAIN')
    assert.ok(imap.client.authenticated)
    const labelled = (phase: string) =>
      metricValue(registry, 'probe_imap_duration_seconds', { leg: 'receive', phase })
    assert.ok(((await labelled('auth')) ?? 0) > 0)
    assert.equal(
      await metricValue(registry, 'probe_imap_auth_mechanism_used', { leg: 'receive', mechanism: 'PLAIN' }),
      1,
    )
    assert.equal(
      await metricValue(registry, 'probe_tls_version_info', { leg: 'receive', version: 'TLS 1.3' }),
      1,
    )
    // STATUS is a select-phase command; NOOP is the caller's own and is not timed.
    const status = await imap.session.call(() => imap.client.status('INBOX', { messages: true }))
    assert.equal(status && status.messages, 5)
    assert.ok(((await labelled('select')) ?? 0) > 0)
    const before = await Promise.all(['auth', 'select', 'logout'].map(labelled))
    const closed = new Promise<void>((resolve) => imap.client.once('close', () => resolve()))
    const pending = imap.session.call(() => imap.client.noop())
    setTimeout(() => controller.abort(), 50)
    await assert.rejects(pending, DeadlineError)
    await closed // the signal closed the client: nothing is left open
    assert.deepEqual(await Promise.all(['auth', 'select', 'logout'].map(labelled)), before)
  },
)

test(
  'imap: a connection reset after login rejects the caller and never crashes the process',
  { timeout: 10_000 },
  async (t) => {
    // A raw server, because only a reset (RST) makes imapflow emit 'error' after connect().
    const server = net.createServer((socket) => {
      socket.on('error', () => undefined)
      socket.write('* OK [CAPABILITY IMAP4rev1] raw server ready\r\n')
      let buffer = ''
      socket.on('data', (chunk: Buffer) => {
        buffer += chunk.toString('latin1')
        for (let i = buffer.indexOf('\r\n'); i >= 0; i = buffer.indexOf('\r\n')) {
          const [tag = '', verb = ''] = buffer.slice(0, i).split(' ')
          buffer = buffer.slice(i + 2)
          if (verb === 'LOGIN') socket.write(`${tag} OK [CAPABILITY IMAP4rev1] Logged in\r\n`)
          else if (verb === 'LIST') socket.write(`* LIST (\\Noselect) "/" ""\r\n${tag} OK done\r\n`)
          else socket.resetAndDestroy()
        }
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    t.after(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const { port } = server.address() as net.AddressInfo
    const module = parseConfig(
      `modules:\n  m:\n${imapModule({
        tls: 'none',
        auth: `{ username: u, password: p, allow_plaintext: true }`,
      })
        .replace(/^\n+/, '')
        .split('\n')
        .map((l) => '    ' + l)
        .join('\n')}\n`,
      'test.yml',
    ).modules['m'] as ImapModule
    const imap = await openImap({ host: '127.0.0.1', port }, module.imap, testContext(5000))
    assert.equal(imap.mechanism, 'IMAP-LOGIN')
    // Watch for 'error' without listening (a listener of ours would hide a missing one in ImapSession).
    const errors: unknown[] = []
    const emit = imap.client.emit.bind(imap.client)
    imap.client.emit = ((event: string, ...args: unknown[]) => {
      if (event === 'error') errors.push(args[0])
      return emit(event, ...args)
    }) as typeof imap.client.emit
    await assert.rejects(imap.session.call(() => imap.client.mailboxOpen('INBOX')))
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(errors.length, 1) // imapflow did emit it: without ImapSession's listener this would have thrown
    imap.session.close()
  },
)
