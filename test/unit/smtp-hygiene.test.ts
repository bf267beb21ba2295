// SMTP protocol hygiene on the wire (raw bytes), and XOAUTH2 against nodemailer's smtp-server.
import assert from 'node:assert/strict'
import net from 'node:net'
import { test, type TestContext } from 'node:test'
import { SMTPServer } from 'smtp-server'
import { certs } from '../servers/certs.ts'
import { probe } from '../helpers/probe.ts'

/** A raw TCP server: records every byte the client sends, with the time, and runs `serve` per connection. */
async function rawServer(
  t: TestContext,
  serve: (socket: net.Socket, received: () => string) => Promise<void>,
) {
  const chunks: { at: number; data: string }[] = []
  const server = net.createServer((socket) => {
    socket.on('data', (d: Buffer) => chunks.push({ at: performance.now(), data: d.toString('latin1') }))
    socket.on('error', () => undefined)
    void serve(socket, () => chunks.map((c) => c.data).join(''))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => {
    server.close()
  })
  return { port: (server.address() as net.AddressInfo).port, chunks }
}

const waitFor = async (check: () => boolean) => {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 5))
}

test('smtp: the client says nothing before the last line of a multi-line 220 greeting, and ends lines with CRLF', async (t) => {
  let lastGreetingLineAt = Infinity
  const server = await rawServer(t, async (socket, received) => {
    socket.write('220-mx.test ESMTP\r\n220-a slow banner,\r\n')
    await new Promise((r) => setTimeout(r, 150)) // a client that speaks now is "early talking"
    lastGreetingLineAt = performance.now()
    socket.write('220 ready\r\n')
    await waitFor(() => received().includes('EHLO'))
    socket.write('250-mx.test\r\n250 SIZE 1000\r\n')
    await waitFor(() => received().includes('MAIL FROM'))
    socket.write('250 ok\r\n')
    await waitFor(() => received().includes('RCPT TO'))
    socket.write('250 ok\r\n')
    await waitFor(() => received().includes('DATA'))
    socket.write('354 go\r\n')
    await waitFor(() => received().includes('\r\n.\r\n'))
    socket.write('250 ok\r\n')
    await waitFor(() => received().includes('QUIT'))
    socket.end('221 bye\r\n')
  })
  const r = await probe(
    `
prober: smtp
allowed_targets: [127.0.0.1]
smtp:
  tls: none
  send: { from: a@mx.test, to: b@mx.test, body: "line one\\nline two\\n.leading dot\\n" }`,
    `127.0.0.1:${server.port}`,
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  const first = server.chunks[0]
  assert.ok(first && first.at >= lastGreetingLineAt, 'the first byte came after the complete greeting')
  const wire = server.chunks.map((c) => c.data).join('')
  assert.doesNotMatch(wire.replace(/\r\n/g, ''), /[\r\n]/, 'every line ends with CRLF, no bare CR or LF')
  assert.match(wire, /\r\n\.\.leading dot\r\n/, 'a leading dot is doubled (dot-stuffing)')
  assert.ok(
    (r.value('probe_smtp_duration_seconds', { phase: 'banner' }) ?? 0) >= 0.1, // the delay starts at the server's accept, a little before the client sees the connection
    'banner includes the slow line',
  )
})

test('smtp: XOAUTH2 with a configured token authenticates against smtp-server', async (t) => {
  const seen: { method: string; user: string | undefined; token: string | undefined }[] = []
  const server = new SMTPServer({
    authMethods: ['XOAUTH2', 'PLAIN'],
    key: certs().good.key,
    cert: certs().good.cert,
    onAuth(auth, _session, callback) {
      seen.push({ method: auth.method, user: auth.username, token: auth.accessToken })
      if (auth.method === 'XOAUTH2' && auth.accessToken === 'ya29.token-for-probe') {
        callback(null, { user: auth.username })
        return
      }
      callback(null, { data: { status: '401', schemes: 'bearer' } })
    },
  })
  server.on('error', () => undefined) // mandatory: TLS client errors are emitted on the server
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => server.close())
  const port = (server.server.address() as net.AddressInfo).port
  const module = (token: string) => `
prober: smtp
allowed_targets: [127.0.0.1]
smtp:
  tls: starttls
  tls_config: { ca_file: ${certs().caFile} }
  auth: { username: probe@mx.test, oauth2_token: ${token} }`
  const ok = await probe(module('ya29.token-for-probe'), `127.0.0.1:${port}`)
  assert.equal(ok.value('probe_success'), 1, ok.debug)
  assert.equal(ok.value('probe_smtp_auth_mechanism_used', { mechanism: 'XOAUTH2' }), 1)
  assert.deepEqual(seen[0], { method: 'XOAUTH2', user: 'probe@mx.test', token: 'ya29.token-for-probe' })
  assert.doesNotMatch(ok.debug, /ya29/, 'the token never appears in the debug output')
  const refused = await probe(module('expired-token'), `127.0.0.1:${port}`)
  assert.equal(refused.value('probe_success'), 0)
  assert.equal(refused.failedPhase, 'auth')
})

test('smtp and imap: a certificate that fails on implicit TLS does not leave the connection open', async (t) => {
  const open = new Set<net.Socket>()
  const { createServer } = await import('node:tls')
  const server = createServer({ cert: certs().selfSigned.cert, key: certs().selfSigned.key }, (socket) => {
    open.add(socket)
    socket.on('error', () => undefined)
    socket.on('close', () => open.delete(socket))
  })
  server.on('tlsClientError', () => undefined)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => server.close())
  const port = (server.address() as net.AddressInfo).port
  const implicit = (prober: 'smtp' | 'imap') => `
prober: ${prober}
allowed_targets: [127.0.0.1]
${prober}:
  tls: implicit
  tls_config: { ca_file: ${certs().caFile} }
  auth: { username: u, password: p }`
  for (const prober of ['smtp', 'imap'] as const) {
    const r = await probe(implicit(prober), `127.0.0.1:${port}`)
    assert.equal(r.failedPhase, 'tls', r.debug)
  }
  await waitFor(() => open.size === 0)
  assert.equal(open.size, 0, 'the server sees every connection closed')
})

test('smtp: QUIT after the server has already closed returns at once instead of waiting for the deadline', async (t) => {
  const { SmtpSession } = await import('../../src/protocol/smtp-session.ts')
  const { connectTcp } = await import('../../src/protocol/connection.ts')
  const { testContext } = await import('../helpers/context.ts')
  const server = await rawServer(t, async (socket, received) => {
    socket.write('220 mx.test ESMTP\r\n')
    await waitFor(() => received().includes('EHLO'))
    socket.end('250 mx.test\r\n') // answers EHLO, then goes away
  })
  const ctx = testContext(3000)
  const session = new SmtpSession({
    socket: await connectTcp('127.0.0.1', server.port, ctx.signal),
    host: '127.0.0.1',
    secured: false,
    mode: 'none',
    tlsConfig: { insecure_skip_verify: false },
    ehloName: 'probe.test',
    signal: ctx.signal,
    logger: ctx.logger,
    customAuth: {},
    hooks: {
      addPhase: () => undefined,
      enterPhase: () => undefined,
      onReply: () => undefined,
      onTls: () => undefined,
    },
  })
  t.after(() => session.close())
  await session.connect()
  await new Promise((r) => setTimeout(r, 100)) // the close has been seen
  const start = performance.now()
  await session.quit()
  assert.ok(performance.now() - start < 500, 'quit() did not wait for an end that had already come')
})
