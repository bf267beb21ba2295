// A tiny scripted TCP/TLS server on port 0: each connection runs an async script (send, expect, STARTTLS, close).
import net from 'node:net'
import tls from 'node:tls'
import type { TestContext } from 'node:test'

export interface ScriptConnection {
  /** Sends text as is (add \r\n yourself, or use line()). */
  send(text: string): void
  /** Sends one line with CRLF. */
  line(text: string): void
  /** Sends text split into chunks, each written `delayMs` apart (split replies, split terminators). */
  sendChunks(chunks: readonly string[], delayMs?: number): Promise<void>
  /** Reads the next line from the client; fails if it does not match. Returns the line. */
  expect(pattern?: RegExp | string): Promise<string>
  /** Upgrades this connection to TLS with the given certificate (after a STARTTLS reply). */
  startTls(cert: { cert: Buffer; key: Buffer }): Promise<void>
  /** Closes the connection. */
  close(): void
  /** Waits until the client closes (or the server is closed). */
  closed(): Promise<void>
}

export interface ScriptedServer {
  port: number
  /** Errors thrown by scripts (unexpected client lines); a test should assert this is empty when it matters. */
  errors: Error[]
  /** Every line the clients sent, in order. */
  received: string[]
  connections: number
  /** The client address of each connection, in order. */
  peers: string[]
  close(): Promise<void>
}

export async function scriptedServer(
  t: TestContext | undefined,
  script: (c: ScriptConnection) => Promise<void>,
  options: { implicitTls?: { cert: Buffer; key: Buffer }; host?: string; port?: number } = {},
): Promise<ScriptedServer> {
  const sockets = new Set<net.Socket>()
  const state: ScriptedServer = {
    port: 0,
    errors: [],
    received: [],
    connections: 0,
    peers: [],
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }

  const onConnection = (raw: net.Socket) => {
    state.connections++
    state.peers.push(raw.remoteAddress ?? '')
    let socket: net.Socket = raw
    sockets.add(raw)
    raw.on('error', () => undefined)
    let buffer = ''
    const lines: string[] = []
    let waiter: (() => void) | undefined
    let ended = false
    const onData = (chunk: Buffer) => {
      buffer += chunk.toString('latin1')
      for (let i = buffer.indexOf('\n'); i >= 0; i = buffer.indexOf('\n')) {
        const line = buffer.slice(0, i).replace(/\r$/, '')
        lines.push(line)
        state.received.push(line)
        buffer = buffer.slice(i + 1)
      }
      waiter?.()
    }
    const onEnd = () => {
      ended = true
      waiter?.()
    }
    const listen = (s: net.Socket) => {
      s.on('data', onData)
      s.on('close', onEnd)
      s.on('error', () => undefined)
    }
    listen(socket)
    const conn: ScriptConnection = {
      send: (text) => {
        if (!socket.destroyed) socket.write(text, 'latin1')
      },
      line: (text) => {
        if (!socket.destroyed) socket.write(text + '\r\n', 'latin1')
      },
      sendChunks: async (chunks, delayMs = 5) => {
        for (const chunk of chunks) {
          if (socket.destroyed) return
          socket.write(chunk, 'latin1')
          await new Promise((r) => setTimeout(r, delayMs))
        }
      },
      expect: async (pattern) => {
        while (lines.length === 0) {
          if (ended) throw new Error(`client closed while the script expected ${String(pattern)}`)
          await new Promise<void>((resolve) => (waiter = resolve))
          waiter = undefined
        }
        const line = lines.shift() ?? ''
        const ok =
          pattern === undefined ||
          (typeof pattern === 'string' ? line.startsWith(pattern) : pattern.test(line))
        if (!ok) throw new Error(`script expected ${String(pattern)}, client sent ${JSON.stringify(line)}`)
        return line
      },
      startTls: (cert) =>
        new Promise<void>((resolve, reject) => {
          socket.off('data', onData)
          socket.off('close', onEnd)
          const secure = new tls.TLSSocket(socket, { isServer: true, cert: cert.cert, key: cert.key })
          sockets.add(secure)
          secure.on('error', reject)
          secure.once('secure', () => {
            secure.off('error', reject)
            resolve()
          })
          socket = secure
          listen(secure)
        }),
      close: () => {
        socket.end()
        socket.destroy()
      },
      closed: () =>
        new Promise<void>((resolve) => {
          if (ended || socket.destroyed) resolve()
          else socket.once('close', () => resolve())
        }),
    }
    script(conn).catch((err: unknown) => {
      state.errors.push(err instanceof Error ? err : new Error(String(err)))
      socket.destroy()
    })
  }

  const server = options.implicitTls
    ? tls.createServer({ cert: options.implicitTls.cert, key: options.implicitTls.key }, onConnection)
    : net.createServer(onConnection)
  server.on('tlsClientError', () => undefined)
  server.on('error', () => undefined)
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, options.host ?? '127.0.0.1', resolve))
  state.port = (server.address() as net.AddressInfo).port
  t?.after(() => state.close())
  return state
}

/** A server that accepts and never says anything. */
export function silentServer(t: TestContext | undefined): Promise<ScriptedServer> {
  return scriptedServer(t, (c) => c.closed())
}
