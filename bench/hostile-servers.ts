// Hostile mail servers for the soak, in a process of their own (floods, silence, early close, a closed port).
// Prints {"ports": ...} as one JSON line when listening; answers "stats" on stdin; exits when stdin ends.
import net from 'node:net'
import { createInterface } from 'node:readline'

const MiB = 1024 * 1024
const FLOOD_BYTES = 10 * MiB
/** No connection lives longer than this, whatever the client does (the soak's deadlines are ~2 s). */
const CONNECTION_LIFETIME_MS = 30_000
/** An endless reply stops here at the latest (a bound in count as well as in time). */
const ENDLESS_CAP_BYTES = 2048 * MiB
/** The helper exits by itself after this, should its parent never close stdin. */
const PROCESS_LIFETIME_MS = 3 * 60 * 60 * 1000
const READ_LIMIT = 64 * 1024
const WRITE_STEP = 64 * 1024

/** FLOOD_BYTES of CRLF lines, each unique (`prefix` + number + padding), so nothing can dedupe them. */
function floodLines(prefix: string): Buffer {
  const buf = Buffer.alloc(FLOOD_BYTES)
  let offset = 0
  for (let i = 0; offset < FLOOD_BYTES; i++) {
    const line = `${prefix}${String(i).padStart(7, '0')} ${'x'.repeat(48)}\r\n`
    offset += buf.write(line, offset, 'latin1')
  }
  // The last line may be cut by the buffer's end: end it properly.
  buf.write('\r\n', FLOOD_BYTES - 2, 'latin1')
  return buf
}

const capaFlood = floodLines('X-FLOOD-')
const untaggedFlood = floodLines('* FLOOD ')
const ehloFlood = floodLines('250-FLOOD-')
const longLine = Buffer.alloc(FLOOD_BYTES, 'x')

interface ServerStats {
  connections: number
  bytesSent: number
}
const stats: Record<string, ServerStats> = {}
const servers: net.Server[] = []

/**
 * Writes `total` bytes taken from `source` (repeated as needed), respecting backpressure, then calls done.
 * Stops as soon as the client goes away.
 */
function pump(socket: net.Socket, source: Buffer, total: number, s: ServerStats, done?: () => void) {
  let sent = 0
  const next = () => {
    while (!socket.destroyed && sent < total) {
      const offset = sent % source.length
      const n = Math.min(WRITE_STEP, total - sent, source.length - offset)
      sent += n
      s.bytesSent += n
      if (!socket.write(source.subarray(offset, offset + n))) {
        socket.once('drain', next)
        return
      }
    }
    if (!socket.destroyed) done?.()
  }
  next()
}

function send(socket: net.Socket, text: string, s: ServerStats) {
  if (socket.destroyed) return
  s.bytesSent += Buffer.byteLength(text)
  socket.write(text)
}

/** Calls onLine for each line the client sends; a client that sends too much without a newline is dropped. */
function readLines(socket: net.Socket, onLine: (line: string) => void) {
  let buffer = ''
  socket.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('latin1')
    if (buffer.length > READ_LIMIT) {
      socket.destroy()
      return
    }
    for (let i = buffer.indexOf('\n'); i >= 0; i = buffer.indexOf('\n')) {
      const line = buffer.slice(0, i).replace(/\r$/, '')
      buffer = buffer.slice(i + 1)
      onLine(line)
    }
  })
}

async function listen(name: string, onConnection: (socket: net.Socket, s: ServerStats) => void) {
  const s: ServerStats = { connections: 0, bytesSent: 0 }
  stats[name] = s
  const server = net.createServer((socket) => {
    s.connections++
    socket.on('error', () => undefined)
    const lifetime = setTimeout(() => socket.destroy(), CONNECTION_LIFETIME_MS)
    socket.on('close', () => clearTimeout(lifetime))
    onConnection(socket, s)
  })
  server.maxConnections = 256
  servers.push(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as net.AddressInfo).port
}

/** A port that was just free and is now closed (connection refused). */
async function closedPort() {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

const ports = {
  closed: await closedPort(),
  // Accepts and says nothing: the probe must end at its deadline.
  silent: await listen('silent', () => undefined),
  greetingCloseSmtp: await listen('greetingCloseSmtp', (socket, s) => {
    send(socket, '220 hostile.test ESMTP\r\n', s)
    socket.end()
  }),
  greetingClosePop3: await listen('greetingClosePop3', (socket, s) => {
    send(socket, '+OK hostile.test POP3\r\n', s)
    socket.end()
  }),
  greetingCloseImap: await listen('greetingCloseImap', (socket, s) => {
    send(socket, '* OK hostile.test IMAP4rev1\r\n', s)
    socket.end()
  }),
  // POP3: CAPA is answered with 10 MiB of capability lines (properly terminated); anything after it with -ERR.
  pop3CapaFlood: await listen('pop3CapaFlood', (socket, s) => {
    send(socket, '+OK hostile.test POP3\r\n', s)
    let flooded = false
    readLines(socket, (line) => {
      const command = line.split(' ')[0]?.toUpperCase()
      if (command === 'CAPA' && !flooded) {
        flooded = true
        send(socket, '+OK capability list follows\r\n', s)
        pump(socket, capaFlood, capaFlood.length, s, () => send(socket, '.\r\n', s))
      } else if (command === 'QUIT') {
        send(socket, '+OK bye\r\n', s)
        socket.end()
      } else {
        send(socket, '-ERR no\r\n', s)
      }
    })
  }),
  // IMAP: the greeting, then 10 MiB of untagged lines at once, then silence (commands are never answered).
  imapUntaggedFlood: await listen('imapUntaggedFlood', (socket, s) => {
    send(socket, '* OK hostile.test IMAP4rev1\r\n', s)
    socket.resume() // read and ignore whatever the client sends
    pump(socket, untaggedFlood, untaggedFlood.length, s)
  }),
  // SMTP: EHLO is answered with `250-...` lines that never end (until the client goes or the caps hit).
  smtpEndlessEhlo: await listen('smtpEndlessEhlo', (socket, s) => {
    send(socket, '220 hostile.test ESMTP\r\n', s)
    let flooded = false
    readLines(socket, (line) => {
      const command = line.split(' ')[0]?.toUpperCase()
      if ((command === 'EHLO' || command === 'HELO') && !flooded) {
        flooded = true
        pump(socket, ehloFlood, ENDLESS_CAP_BYTES, s)
      } else if (!flooded) {
        send(socket, '502 no\r\n', s)
      }
    })
  }),
  // Any protocol: instead of a greeting, one line of 10 MiB without a newline, then silence.
  longLine: await listen('longLine', (socket, s) => {
    socket.resume()
    pump(socket, longLine, longLine.length, s)
  }),
}

const lifetime = setTimeout(() => process.exit(0), PROCESS_LIFETIME_MS)
const input = createInterface({ input: process.stdin })
input.on('line', (line) => {
  if (line.trim() === 'stats') process.stdout.write(JSON.stringify({ stats }) + '\n')
})
input.on('close', () => {
  clearTimeout(lifetime)
  for (const server of servers) server.close()
  process.exit(0)
})
process.stdout.write(JSON.stringify({ ports }) + '\n')
