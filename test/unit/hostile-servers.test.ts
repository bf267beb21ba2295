// Hostile servers: floods, garbage and wrong protocols end a probe at once, in the right phase, within the
// deadline, with a bounded transcript; and a failed SMTP probe still says QUIT.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { certs } from '../servers/certs.ts'
import { scriptedServer, type ScriptConnection } from '../servers/scripted.ts'
import { probe, type ProbeOutcome } from '../helpers/probe.ts'

const ca = () => certs().caFile
const MB10 = 10 * 1024 * 1024
/** A bounded transcript: the debug text of one probe stays far below the flood's size. */
const MAX_DEBUG = 200 * 1024

const modules = {
  smtp: (tls = 'starttls', timeout = '2s') => `
prober: smtp
allowed_targets: [127.0.0.1]
timeout: ${timeout}
smtp:
  tls: ${tls}
  tls_config: { ca_file: ${ca()} }`,
  pop3: (tls = 'stls', timeout = '2s') => `
prober: pop3
allowed_targets: [127.0.0.1]
timeout: ${timeout}
pop3:
  tls: ${tls}
  tls_config: { ca_file: ${ca()} }
  auth: { username: probe, password: secret }`,
  imap: (tls = 'starttls', timeout = '2s') => `
prober: imap
allowed_targets: [127.0.0.1]
timeout: ${timeout}
imap:
  tls: ${tls}
  tls_config: { ca_file: ${ca()} }
  auth: { username: probe, password: secret }`,
}

/** `count` short lines (about `bytes` in all) in 64 KiB writes, stopping when the client goes away. */
async function flood(c: ScriptConnection, line: string, bytes: number) {
  const chunk = (line + '\r\n').repeat(Math.ceil((64 * 1024) / (line.length + 2)))
  for (let sent = 0; sent < bytes; sent += chunk.length) {
    c.send(chunk)
    await new Promise((resolve) => setImmediate(resolve))
  }
}

function assertCutOff(r: ProbeOutcome, phase: string, message: RegExp, deadline: number) {
  assert.equal(r.value('probe_success'), 0, r.debug)
  assert.equal(r.failedPhase, phase, r.debug)
  assert.match(r.debug, message)
  // The message says the budget cut it off; the answer comes within the deadline (slack for a busy machine).
  assert.ok(r.seconds < deadline + 0.5, `answered after ${r.seconds.toFixed(2)} s (deadline ${deadline} s)`)
  assert.ok(r.debug.length < MAX_DEBUG, `debug text is ${r.debug.length} bytes`)
}

test('hostile: a POP3 server sending 10 MB of CAPA lines is cut off in phase capa, with a bounded transcript', async (t) => {
  const server = await scriptedServer(t, async (c) => {
    c.line('+OK ready')
    await c.expect('CAPA')
    c.line('+OK here they come')
    await flood(c, 'X-FLOOD-CAPABILITY-KEYWORD', MB10)
    await c.closed()
  })
  const r = await probe(modules.pop3(), `127.0.0.1:${server.port}`)
  assertCutOff(r, 'capa', /multi-line reply longer than 65536 bytes/, 2)
})

test('hostile: an IMAP server sending 10 MB of untagged lines is cut off at once, not parsed until the deadline', async (t) => {
  const server = await scriptedServer(t, async (c) => {
    c.line('* OK [CAPABILITY IMAP4rev1 STARTTLS] ready')
    await c.expect(/STARTTLS/)
    await flood(c, '* 1 EXISTS', MB10)
    await c.closed()
  })
  const r = await probe(modules.imap(), `127.0.0.1:${server.port}`)
  // Cut off by the budget (the message), not by the deadline; how fast depends on the machine's load.
  assertCutOff(r, 'starttls', /more than 2000 lines or 1048576 bytes of untagged data/, 2)
})

test('hostile: an SMTP server whose EHLO reply never ends is cut off in phase ehlo', async (t) => {
  const server = await scriptedServer(t, async (c) => {
    c.line('220 mx.test ESMTP')
    await c.expect('EHLO')
    await flood(c, '250-FLOOD', MB10)
    await c.closed()
  })
  const r = await probe(modules.smtp(), `127.0.0.1:${server.port}`)
  assertCutOff(r, 'ehlo', /exceeds maximum allowed size/, 2)
})

for (const protocol of ['smtp', 'pop3', 'imap'] as const) {
  test(`hostile: ${protocol}: a 10 MB greeting line without a line break is cut off in phase banner`, async (t) => {
    const server = await scriptedServer(t, async (c) => {
      for (let sent = 0; sent < MB10; sent += 64 * 1024) {
        c.send('x'.repeat(64 * 1024))
        await new Promise((resolve) => setImmediate(resolve))
      }
      await c.closed()
    })
    const r = await probe(modules[protocol](), `127.0.0.1:${server.port}`)
    assertCutOff(r, 'banner', /longer than|exceeds max|Line length/i, 2)
  })

  test(`hostile: ${protocol}: implicit TLS against a cleartext server says "server did not speak TLS"`, async (t) => {
    const greeting = { smtp: '220 mx.test ESMTP', pop3: '+OK ready', imap: '* OK ready' }[protocol]
    const server = await scriptedServer(t, async (c) => {
      c.line(greeting)
      await c.closed()
    })
    const r = await probe(modules[protocol]('implicit', '5s'), `127.0.0.1:${server.port}`)
    assert.equal(r.failedPhase, 'tls', r.debug)
    assert.match(r.debug, /err="server did not speak TLS \(is this a cleartext port\?\)"/)
    assert.doesNotMatch(r.debug, /probe failed.*ssl3_get_record/, 'OpenSSL text is detail, not the reason')
    assert.match(r.debug, /wrong version number/, 'the detail is kept in the debug output')
    assert.ok(r.seconds < 1, `took ${r.seconds.toFixed(2)} s`)
  })
}

test('hostile: imap: a garbage first line fails at once in phase banner', async (t) => {
  const server = await scriptedServer(t, async (c) => {
    c.line('SSH-2.0-OpenSSH_9.2p1 Debian-2')
    await c.closed()
  })
  const r = await probe(modules.imap('starttls', '5s'), `127.0.0.1:${server.port}`)
  assert.equal(r.failedPhase, 'banner', r.debug)
  assert.match(r.debug, /expected \* OK greeting, got \\"SSH-2.0-OpenSSH/)
  assert.ok(r.seconds < 1, `took ${r.seconds.toFixed(2)} s of a 5 s deadline`)
})

for (const answer of ['BAD', 'NO'] as const) {
  test(`hostile: imap: CAPABILITY answered ${answer} fails in phase capability with the server's text`, async (t) => {
    const server = await scriptedServer(t, async (c) => {
      c.line('* OK ready')
      const command = await c.expect(/CAPABILITY/)
      c.line(`${command.split(' ')[0] ?? ''} ${answer} capability list unavailable today`)
      await c.closed()
    })
    const r = await probe(modules.imap('starttls', '5s'), `127.0.0.1:${server.port}`)
    assert.equal(r.failedPhase, 'capability', r.debug)
    assert.match(r.debug, new RegExp(`${answer} capability list unavailable today`))
    assert.doesNotMatch(r.debug, /no usable mechanism/)
    assert.ok(r.seconds < 1, `took ${r.seconds.toFixed(2)} s`)
  })
}

test('hostile: smtp: a probe that fails at AUTH still ends the session with QUIT', async (t) => {
  let quit = false
  const server = await scriptedServer(t, async (c) => {
    c.line('220 mx.test ESMTP')
    await c.expect('EHLO')
    c.line('250-mx.test\r\n250-STARTTLS\r\n250 ENHANCEDSTATUSCODES')
    await c.expect('STARTTLS')
    c.line('220 2.0.0 go')
    await c.startTls(certs().good)
    await c.expect('EHLO')
    c.line('250-mx.test\r\n250 AUTH PLAIN')
    await c.expect('AUTH PLAIN')
    c.line('535 5.7.8 authentication failed')
    await c.expect('QUIT')
    quit = true
    c.line('221 2.0.0 bye')
    c.close()
  })
  const r = await probe(
    `${modules.smtp('starttls', '5s')}\n  auth: { username: probe, password: secret }`,
    `127.0.0.1:${server.port}`,
  )
  assert.equal(r.failedPhase, 'auth', r.debug)
  assert.equal(r.value('probe_smtp_status_code'), 535, 'the closing 221 does not hide the failing reply')
  assert.equal(quit, true, 'QUIT was sent')
  assert.deepEqual(server.errors, [])
})

test('hostile: smtp: the cleartext connection of retry_with_starttls ends with QUIT before the retry', async (t) => {
  const quits: number[] = []
  let connection = 0
  const server = await scriptedServer(t, async (c) => {
    const n = ++connection
    c.line('220 mx.test ESMTP')
    await c.expect('EHLO')
    c.line('250-mx.test\r\n250-STARTTLS\r\n250 8BITMIME') // no AUTH in the clear
    const next = await c.expect()
    if (next === 'QUIT') {
      quits.push(n)
      c.line('221 bye')
      c.close()
      return
    }
    c.line('220 go')
    await c.startTls(certs().good)
    await c.expect('EHLO')
    c.line('250-mx.test\r\n250 AUTH PLAIN')
    await c.expect('AUTH PLAIN')
    c.line('235 ok')
    await c.expect('QUIT')
    quits.push(n)
    c.line('221 bye')
    c.close()
  })
  const r = await probe(
    `
prober: smtp
allowed_targets: [127.0.0.1]
timeout: 5s
smtp:
  tls: none
  retry_with_starttls: true
  tls_config: { ca_file: ${ca()} }
  auth: { username: probe, password: secret }`,
    `127.0.0.1:${server.port}`,
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.deepEqual(quits, [1, 2], 'both connections ended with QUIT')
})

test('hostile: imap: STARTTLS whose handshake never comes runs into the module deadline, not imapflow’s fixed 10 s', async (t) => {
  const server = await scriptedServer(t, async (c) => {
    c.line('* OK [CAPABILITY IMAP4rev1 STARTTLS] ready')
    const command = await c.expect(/STARTTLS/)
    c.line(`${command.split(' ')[0] ?? ''} OK begin TLS`)
    await c.closed() // and never answers the ClientHello
  })
  const r = await probe(modules.imap('starttls', '11s'), `127.0.0.1:${server.port}`)
  assert.equal(r.failedPhase, 'tls', r.debug)
  assert.doesNotMatch(r.debug, /Failed to upgrade connection in required time/)
  assert.ok(r.seconds >= 10.9, `gave up after ${r.seconds.toFixed(2)} s, before the 11 s deadline`)
  // Slack for a loaded machine (the suite runs four files at once on two cores): the point is 11 s, not 10.
  assert.ok(r.seconds < 11.6, `answered after ${r.seconds.toFixed(2)} s`)
})

test('hostile: a server announcing thousands of capabilities makes at most 100 series, with bounded label values', async (t) => {
  const server = await scriptedServer(t, async (c) => {
    c.line('+OK ready')
    await c.expect('CAPA')
    c.line('+OK')
    for (let i = 0; i < 3000; i++) c.line(`X-CAP-${i}${i === 0 ? 'y'.repeat(5000) : ''}`)
    c.line('.')
    await c.closed()
  })
  const r = await probe(
    modules.pop3('none', '2s').replace('password: secret', 'password: secret, allow_plaintext: true'),
    `127.0.0.1:${server.port}`,
  )
  const series = r.samples.filter((s) => s.name === 'probe_pop3_capability_info')
  assert.equal(series.length, 100)
  assert.ok(series.every((s) => (s.labels['capability'] ?? '').length <= 200))
})
