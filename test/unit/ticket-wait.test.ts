// The wait for the TLS 1.3 session ticket after STARTTLS: it ends with the ticket, when the server speaks first,
// after as long as the handshake took when no ticket comes, and not at all for TLS 1.2. The servers without a
// ticket are OpenSSL's own s_server with -num_tickets 0 (Node's TLS server always sends two).
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import tls from 'node:tls'
import { afterTicket, ticketWait, type TicketWait } from '../../src/protocol/connection.ts'
import { recordingLogger } from '../helpers/logger.ts'
import { certs } from '../servers/certs.ts'

/** A client TLS socket to 127.0.0.1:port, once its handshake is done. */
function connect(t: TestContext, port: number, maxVersion?: tls.SecureVersion): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      ca: certs().ca,
      ...(maxVersion ? { maxVersion } : {}),
    })
    t.after(() => socket.destroy())
    socket.once('error', reject)
    socket.once('secureConnect', () => resolve(socket))
  })
}

/** Node's TLS server on a free port; `greeting` is written as soon as a client's handshake is done. */
async function nodeServer(t: TestContext, options: tls.TlsOptions = {}): Promise<number> {
  const server = tls.createServer({ ...certs().good, ...options }, (socket) => {
    socket.on('error', () => undefined)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => server.close())
  return (server.address() as { port: number }).port
}

/** A port nothing listens on just now (s_server cannot be told to pick one and say which). */
async function freePort(): Promise<number> {
  const probe = net.createServer()
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const { port } = probe.address() as { port: number }
  await new Promise((resolve) => probe.close(resolve))
  return port
}

/**
 * `openssl s_server` with TLS 1.3 and no session tickets, on a free port; what `send` holds is on its
 * stdin from the start, so it writes it right after the handshake (nothing: it never speaks).
 */
async function ticketlessServer(t: TestContext, send: string): Promise<number> {
  const dir = certs().dir
  const port = await freePort()
  const server: ChildProcess = spawn(
    'openssl',
    [
      's_server',
      '-accept',
      `127.0.0.1:${port}`,
      '-cert',
      join(dir, 'good.crt'),
      '-key',
      join(dir, 'good.key'),
    ].concat(['-tls1_3', '-num_tickets', '0', '-naccept', '1', '-ign_eof']),
    { stdio: ['pipe', 'pipe', 'ignore'] },
  )
  t.after(() => server.kill())
  if (send !== '') server.stdin?.write(send)
  await new Promise<void>((resolve, reject) => {
    let out = ''
    server.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString()
      if (out.includes('ACCEPT')) resolve()
    })
    server.once('exit', (code) => reject(new Error(`openssl s_server exited (${code}): ${out}`)))
  })
  return port
}

const wait = (socket: tls.TLSSocket, handshakeMs: number, serverSpoke?: () => boolean) => {
  const { logger, lines } = recordingLogger()
  return ticketWait(socket, handshakeMs, logger, serverSpoke).then((w) => ({ ...w, lines }))
}

test('ticket wait: a TLS 1.3 server that sends its ticket ends the wait with it', async (t) => {
  const socket = await connect(t, await nodeServer(t))
  const result = await wait(socket, 10)
  assert.equal(result.ended, 'ticket')
  assert.ok(result.ms < 10, `${result.ms} ms`)
  assert.deepEqual(
    result.lines.map((l) => l.msg),
    ['TLS session ticket arrived'],
  )
})

test('ticket wait: TLS 1.2 has no ticket to wait for, so there is no wait', async (t) => {
  const socket = await connect(t, await nodeServer(t), 'TLSv1.2')
  const result = await wait(socket, 10)
  assert.equal(result.ended, 'TLS 1.2')
  assert.equal(result.ms, 0)
})

test('ticket wait: without a ticket it ends after as long as the handshake took, at most 10 ms', async (t) => {
  const socket = await connect(t, await ticketlessServer(t, ''))
  const short = await wait(socket, 3, () => socket.readableLength > 0)
  assert.equal(short.ended, 'timeout')
  assert.ok(short.ms >= 2.5 && short.ms < 100, `${short.ms} ms`)
  assert.deepEqual(
    short.lines.map((l) => l.msg),
    ['no TLS session ticket; going on'],
  )
  const long = await wait(socket, 5000)
  assert.equal(long.ended, 'timeout')
  assert.ok(long.ms >= 9.5 && long.ms < 200, `capped at 10 ms: ${long.ms} ms`)
})

test('ticket wait: a server that speaks first without a ticket ends the wait at once, its data left unread', async (t) => {
  const socket = await connect(t, await ticketlessServer(t, '* OK speaking first\n'))
  const result = await wait(socket, 5000, () => socket.readableLength > 0)
  assert.equal(result.ended, 'server spoke')
  assert.ok(result.ms < 9, `before the 10 ms limit: ${result.ms} ms`)
  assert.equal(result.lines[0]?.msg, 'the server spoke before any TLS session ticket; going on')
  // nothing was taken from the socket: the reader that comes next gets every byte
  const data = (socket.read() as Buffer | null)?.toString()
  assert.equal(data, '* OK speaking first\n')
})

test('afterTicket: go runs once, after the wait, with what ended it', async (t) => {
  const socket = await connect(t, await nodeServer(t))
  const calls: TicketWait[] = []
  await new Promise<void>((resolve) => {
    afterTicket(socket, 10, recordingLogger().logger, (w) => {
      calls.push(w)
      setTimeout(resolve, 20) // room for a second call, if one came
    })
  })
  assert.equal(calls.length, 1)
  assert.equal(calls[0]?.ended, 'ticket')
})
