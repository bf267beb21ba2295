// Guards for the private internals of nodemailer and imapflow that the protocol sessions rely on, and
// for the exact version pins that make an upgrade deliberate. Each failure names the pinned version the
// code was written for and what to review; see README 'Library internals'. The behaviour built on these
// internals is tested in smtp-prober.test.ts and imap-prober.test.ts; this file only asks whether the
// library still offers it, against in-process scripted servers.
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import net from 'node:net'
import { test, type TestContext } from 'node:test'
import tls from 'node:tls'
import { ImapFlow, type ImapFlowOptions, type ImapTransport } from 'imapflow'
import SMTPConnection from 'nodemailer/lib/smtp-connection'
import { certs } from '../servers/certs.ts'
import { scriptedServer, type ScriptConnection, type ScriptedServer } from '../servers/scripted.ts'

/** The versions src/ was written and reviewed against; package.json must name exactly these. */
const PINNED = { nodemailer: '10.6.0', imapflow: '2.10.2' } as const

const NM = `nodemailer ${PINNED.nodemailer}`
const IF = `imapflow ${PINNED.imapflow}`
const SMTP_SESSION = 'src/protocol/smtp-session.ts'
const IMAP_SESSION = 'src/protocol/imap-session.ts'
const SEE = "see README 'Library internals'"

const root = new URL('../../', import.meta.url)
const readJson = (path: string): unknown => JSON.parse(readFileSync(new URL(path, root), 'utf8'))
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** The source text of a library function, failing with `missing` when it is not a function. */
function sourceOf(fn: unknown, missing: string): string {
  assert.equal(typeof fn, 'function', missing)
  return String(fn)
}

/** Fails with `message` unless all `needles` are in `haystack`, in this order. */
function assertInOrder(haystack: string, needles: string[], message: string) {
  const at = needles.map((s) => haystack.indexOf(s))
  assert.ok(
    at.every((i, n) => i >= 0 && (n === 0 || i > (at[n - 1] ?? -1))),
    `${message} (looked for ${needles.map((s) => JSON.stringify(s)).join(', ')} in this order)`,
  )
}

function tcp(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.off('error', reject)
      resolve(socket)
    })
    socket.once('error', reject)
  })
}

// ---------------------------------------------------------------------------------------------------
// package.json pins

test('library pins: package.json names nodemailer and imapflow exactly, and those are the installed versions', () => {
  const pkg = readJson('package.json') as { dependencies: Record<string, string> }
  const lock = readJson('package-lock.json') as {
    packages: Record<string, { version?: string; dependencies?: Record<string, string> }>
  }
  for (const name of ['nodemailer', 'imapflow'] as const) {
    const pin = pkg.dependencies[name]
    assert.ok(
      pin !== undefined && /^\d+\.\d+\.\d+$/.test(pin),
      `package.json must pin ${name} exactly (no ^, ~, ranges or tags), found ${JSON.stringify(pin)}: ` +
        `src/ patches its internals, so an upgrade must be deliberate; ${SEE}`,
    )
    assert.equal(
      pin,
      PINNED[name],
      `package.json pins ${name} ${pin}, but src/ and these guards were reviewed against ${name} ${PINNED[name]}: ` +
        `review the internals listed in README 'Library internals', then update PINNED in this file`,
    )
    const installed = (readJson(`node_modules/${name}/package.json`) as { version: string }).version
    assert.equal(
      installed,
      pin,
      `node_modules has ${name} ${installed}, package.json pins ${pin}: run npm ci (an upgrade goes through the pin)`,
    )
    assert.equal(
      lock.packages['']?.dependencies?.[name],
      pin,
      `package-lock.json's root entry does not name ${name} ${pin}: run npm install`,
    )
    const copies = Object.keys(lock.packages).filter(
      (p) => p === `node_modules/${name}` || p.endsWith(`/node_modules/${name}`),
    )
    assert.deepEqual(
      copies,
      [`node_modules/${name}`],
      `package-lock.json has more than one copy of ${name} (${copies.join(', ')}): a dependency (smtp-server?) wants another version; the guards only check the top-level copy`,
    )
  }
  assert.ok(
    !existsSync(new URL('node_modules/smtp-server/node_modules/nodemailer', root)),
    `smtp-server has its own nodemailer copy: keep one nodemailer (${PINNED.nodemailer}) installed`,
  )
})

// ---------------------------------------------------------------------------------------------------
// nodemailer: SMTPConnection (nodemailer/lib/smtp-connection), as src/protocol/smtp-session.ts drives it

/** What smtp-session.ts reaches into; `_socket`, `customAuth` and `secure` are declared in nodemailer's d.ts. */
interface NodemailerInternals {
  _supportedExtensions: string[]
  _upgradeConnection(cb: (err: Error | null, secured?: boolean) => void): void
}
const nodemailerInternals = (conn: SMTPConnection) => conn as unknown as NodemailerInternals

interface LogLine {
  tnx: string | undefined
  text: string
}

/** An SMTPConnection on an already connected socket, set up the way SmtpSession sets it up. */
async function smtpClient(t: TestContext, port: number, options: SMTPConnection.Options = {}) {
  const socket = await tcp(port)
  const log: LogLine[] = []
  const entry = (data?: { tnx?: string }, text?: unknown) => {
    log.push({ tnx: data?.tnx, text: typeof text === 'string' ? text : '' })
  }
  const logger = { trace: entry, debug: entry, info: entry, warn: entry, error: entry, fatal: entry }
  const conn = new SMTPConnection({
    connection: socket,
    host: '127.0.0.1',
    secure: false,
    secured: false,
    name: 'probe.test',
    logger,
    transactionLog: true,
    connectionTimeout: 30_000,
    greetingTimeout: 30_000,
    socketTimeout: 30_000,
    ...options,
  })
  conn.on('error', () => undefined)
  t.after(() => {
    conn.close()
    socket.destroy()
  })
  return { conn, socket, log }
}

function smtpConnect(conn: SMTPConnection): Promise<void> {
  return new Promise((resolve, reject) => {
    conn.connect((err) => (err ? reject(err) : resolve()))
  })
}

test('nodemailer internals: the fields and methods smtp-session.ts uses exist with the expected shape', () => {
  const proto = SMTPConnection.prototype as unknown as Record<string, unknown>
  assert.equal(
    typeof proto['_upgradeConnection'],
    'function',
    `${NM}'s SMTPConnection._upgradeConnection is gone: ${SMTP_SESSION} times STARTTLS, checks the certificate and waits for the TLS ticket through it; ${SEE}`,
  )
  assert.equal(
    (proto['_upgradeConnection'] as (...args: unknown[]) => unknown).length,
    1,
    `${NM}'s SMTPConnection._upgradeConnection no longer takes just a callback: ${SMTP_SESSION} wraps it as _upgradeConnection(cb(err, secured)); ${SEE}`,
  )
  const conn = new SMTPConnection({ host: '127.0.0.1', port: 1 })
  const internals = conn as unknown as Record<string, unknown>
  assert.ok(
    Array.isArray(internals['_supportedExtensions']) && internals['_supportedExtensions'].length === 0,
    `${NM}'s SMTPConnection._supportedExtensions is no longer an array (empty before EHLO): ${SMTP_SESSION} removes PIPELINING from it for pipelining: false; ${SEE}`,
  )
  assert.equal(
    conn._socket,
    false,
    `${NM}'s SMTPConnection._socket is no longer false before connect(): ${SMTP_SESSION} reads the live socket from it; ${SEE}`,
  )
  assert.ok(
    conn.customAuth instanceof Map,
    `${NM}'s SMTPConnection.customAuth is no longer a Map: ${SMTP_SESSION} registers SCRAM and XOAUTH2 through the customAuth option; ${SEE}`,
  )
  assert.equal(
    conn.secure,
    false,
    `${NM}'s SMTPConnection.secure (marked @private in its d.ts) is no longer a boolean: SmtpSession.secure returns it; ${SEE}`,
  )
  const starttls = sourceOf(
    proto['_actionSTARTTLS'],
    `${NM}'s SMTPConnection._actionSTARTTLS is gone: STARTTLS handling moved, check that ${SMTP_SESSION}'s _upgradeConnection wrapper still runs; ${SEE}`,
  )
  assert.ok(
    starttls.includes('this._upgradeConnection('),
    `${NM}'s STARTTLS reply handler (_actionSTARTTLS) no longer calls this._upgradeConnection(): ${SMTP_SESSION}'s wrapper would never run; ${SEE}`,
  )
  assertInOrder(
    sourceOf(proto['_parseEhloExtensions'], `${NM}'s SMTPConnection._parseEhloExtensions is gone; ${SEE}`),
    ['PIPELINING', "this._supportedExtensions.push('PIPELINING')"],
    `${NM} no longer fills _supportedExtensions with PIPELINING from the EHLO reply: ${SMTP_SESSION}'s pipelining: false relies on it; ${SEE}`,
  )
  assert.ok(
    sourceOf(proto['_setEnvelope'], `${NM}'s SMTPConnection._setEnvelope is gone; ${SEE}`).includes(
      "this._supportedExtensions.includes('PIPELINING')",
    ),
    `${NM}'s _setEnvelope no longer decides pipelining from this._supportedExtensions at send(): ${SMTP_SESSION}'s pipelining: false would be ignored; ${SEE}`,
  )
})

test('nodemailer internals: STARTTLS goes through _upgradeConnection, whose callback gets the live TLS socket in _socket and sends EHLO', async (t) => {
  const server = await scriptedServer(t, async (c) => {
    c.line('220 mx.test ESMTP')
    await c.expect(/^EHLO /)
    c.send('250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n')
    await c.expect('STARTTLS')
    c.line('220 2.0.0 Ready to start TLS')
    await c.startTls(certs().good)
    await c.expect(/^EHLO /)
    c.send('250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n')
    await c.closed()
  })
  const { conn, socket } = await smtpClient(t, server.port, { tls: { ca: certs().ca } })
  const internals = nodemailerInternals(conn)
  assert.equal(
    typeof internals._upgradeConnection,
    'function',
    `${NM}'s SMTPConnection._upgradeConnection is gone: ${SMTP_SESSION} times STARTTLS, checks the certificate and waits for the TLS ticket through it; ${SEE}`,
  )
  const original = internals._upgradeConnection.bind(conn)
  const seen: {
    calls: number
    receivedAtCall?: string[]
    err?: Error | null
    secured?: boolean | undefined
    socketInCallback?: unknown
    receivedBeforeRelease?: string[]
  } = { calls: 0 }
  // As smtp-session.ts does: wrap on the instance, hold nodemailer's callback for a while.
  internals._upgradeConnection = (cb) => {
    seen.calls++
    seen.receivedAtCall = [...server.received]
    original((err, secured) => {
      seen.err = err
      seen.secured = secured
      seen.socketInCallback = conn._socket
      setTimeout(() => {
        seen.receivedBeforeRelease = [...server.received]
        cb(err, secured)
      }, 100)
    })
  }
  const connected = smtpConnect(conn)
  assert.equal(
    conn._socket,
    socket,
    `${NM}'s SMTPConnection._socket is not the socket given as options.connection after connect(): SmtpSession.socket and close() use it; ${SEE}`,
  )
  await connected
  const ehlos = (lines: string[] | undefined) => (lines ?? []).filter((l) => l.startsWith('EHLO ')).length
  assert.equal(
    seen.calls,
    1,
    `${NM} did not call SMTPConnection._upgradeConnection exactly once for STARTTLS (${seen.calls} calls): ${SMTP_SESSION} times STARTTLS through it; ${SEE}`,
  )
  assert.equal(
    seen.receivedAtCall?.at(-1),
    'STARTTLS',
    `${NM} calls _upgradeConnection elsewhere than right after the 220 reply to STARTTLS: ${SMTP_SESSION}'s 'tls' phase would time something else; ${SEE}`,
  )
  assert.equal(seen.err, null, `${NM}'s _upgradeConnection callback reported an error for a good handshake`)
  assert.equal(
    seen.secured,
    true,
    `${NM}'s _upgradeConnection callback no longer gets (null, true) after a handshake: ${SMTP_SESSION} checks the certificate only when secured is true; ${SEE}`,
  )
  assert.ok(
    seen.socketInCallback instanceof tls.TLSSocket && seen.socketInCallback.encrypted,
    `${NM}'s SMTPConnection._socket is not the TLS socket when _upgradeConnection's callback runs: ${SMTP_SESSION} hands it to onTls() and checks its certificate there; ${SEE}`,
  )
  assert.equal(
    ehlos(seen.receivedBeforeRelease),
    1,
    `${NM} sent the EHLO after STARTTLS without waiting for _upgradeConnection's callback: ${SMTP_SESSION}'s certificate check and TLS-ticket wait would no longer come before EHLO; ${SEE}`,
  )
  assert.equal(
    ehlos(server.received),
    2,
    `${NM} did not send EHLO again once _upgradeConnection's callback ran; ${SEE}`,
  )
  assert.equal(
    conn._socket,
    seen.socketInCallback,
    `${NM}'s SMTPConnection._socket is no longer the TLS socket after STARTTLS: SmtpSession.socket returns it; ${SEE}`,
  )
  assert.equal(
    conn.secure,
    true,
    `${NM}'s SMTPConnection.secure is not true after STARTTLS: SmtpSession.secure returns it; ${SEE}`,
  )
  assert.deepEqual(
    nodemailerInternals(conn)._supportedExtensions,
    ['PIPELINING', 'SIZE'],
    `${NM}'s SMTPConnection._supportedExtensions is not filled from the EHLO reply after STARTTLS: ${SMTP_SESSION} removes PIPELINING from it; ${SEE}`,
  )
})

/** One SMTP transaction against a scripted server; returns what the server had received when MAIL arrived. */
async function transaction(t: TestContext, removePipelining: boolean) {
  let atMail: string[] = []
  const server = await scriptedServer(t, async (c: ScriptConnection) => {
    c.line('220 mx.test ESMTP')
    await c.expect(/^EHLO /)
    c.send('250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n')
    await c.expect(/^MAIL FROM:/)
    await delay(100) // whatever the client pipelines behind MAIL is here by now
    atMail = [...server.received]
    c.line('250 2.1.0 Ok')
    await c.expect(/^RCPT TO:/)
    c.line('250 2.1.5 Ok')
    await c.expect('DATA')
    c.line('354 End data with <CR><LF>.<CR><LF>')
    let line = ''
    while (line !== '.') line = await c.expect()
    c.line('250 2.0.0 Ok: queued as ABC123')
    await c.closed()
  })
  const { conn, log } = await smtpClient(t, server.port, { ignoreTLS: true })
  await smtpConnect(conn)
  const extensions = [...nodemailerInternals(conn)._supportedExtensions]
  if (removePipelining) {
    // As smtp-session.ts does for pipelining: false: a new array without PIPELINING.
    const internals = nodemailerInternals(conn)
    internals._supportedExtensions = internals._supportedExtensions.filter((x) => x !== 'PIPELINING')
  }
  const info = await new Promise<SMTPConnection.SentMessageInfo>((resolve, reject) => {
    conn.send({ from: 'probe@a.test', to: ['user@b.test'] }, 'Subject: t\r\n\r\nbody\r\n', (err, sent) =>
      err ? reject(err) : resolve(sent),
    )
  })
  return { extensions, atMail, info, log }
}

test('nodemailer internals: _supportedExtensions is filled from EHLO and decides at send() whether MAIL, RCPT and DATA are pipelined', async (t) => {
  const kept = await transaction(t, false)
  assert.deepEqual(
    kept.extensions,
    ['8BITMIME', 'PIPELINING'],
    `${NM}'s SMTPConnection._supportedExtensions is no longer the list of extensions parsed from the EHLO reply: ${SMTP_SESSION} removes PIPELINING from it; ${SEE}`,
  )
  assert.ok(
    kept.atMail.includes('RCPT TO:<user@b.test>') && kept.atMail.includes('DATA'),
    `${NM} no longer pipelines MAIL, RCPT and DATA when the server offers PIPELINING (server had ${JSON.stringify(kept.atMail)}): ` +
      `the pipelining: true probe and the check below need review; ${SEE}`,
  )
  const removed = await transaction(t, true)
  assert.ok(
    !removed.atMail.some((l) => l.startsWith('RCPT ') || l === 'DATA'),
    `${NM} pipelined the envelope although PIPELINING was removed from _supportedExtensions before send() (server had ${JSON.stringify(removed.atMail)}): ` +
      `${SMTP_SESSION} can no longer time MAIL, RCPT and DATA as separate round trips for pipelining: false; ${SEE}`,
  )
  assert.equal(removed.info.response, '250 2.0.0 Ok: queued as ABC123')
})

test('nodemailer internals: the transaction log reports each command as tnx client and each whole reply as tnx server, the message body not at all', async (t) => {
  const { log } = await transaction(t, true)
  const client = log.filter((l) => l.tnx === 'client').map((l) => l.text)
  const server = log.filter((l) => l.tnx === 'server').map((l) => l.text)
  const message =
    `${NM}'s transaction log (logger + transactionLog: true) changed: ${SMTP_SESSION} times every phase from ` +
    `{tnx: 'client'} entries (one per command, none for the message) and {tnx: 'server'} entries (one per complete reply, lines joined by \\n), the text as the second argument; ${SEE}`
  assert.deepEqual(
    client,
    ['EHLO probe.test', 'MAIL FROM:<probe@a.test>', 'RCPT TO:<user@b.test>', 'DATA'],
    `${message} (client entries: ${JSON.stringify(client)})`,
  )
  assert.deepEqual(
    server,
    [
      '220 mx.test ESMTP',
      '250-mx.test\n250-PIPELINING\n250 8BITMIME',
      '250 2.1.0 Ok',
      '250 2.1.5 Ok',
      '354 End data with <CR><LF>.<CR><LF>',
      '250 2.0.0 Ok: queued as ABC123',
    ],
    `${message} (server entries: ${JSON.stringify(server)})`,
  )
})

test('nodemailer internals: login() swaps method XOAUTH2 without auth.oauth2 for another mechanism, but runs a custom handler under any other name', async (t) => {
  const script = (authLines: string[]) => async (c: ScriptConnection) => {
    c.line('220 mx.test ESMTP')
    await c.expect(/^EHLO /)
    c.send('250-mx.test\r\n250 AUTH PLAIN LOGIN XOAUTH2\r\n')
    const line = await c.expect()
    authLines.push(line)
    c.line(line.startsWith('AUTH XOAUTH2 ') ? '235 2.7.0 Accepted' : '535 5.7.8 Authentication failed')
    await c.closed()
  }
  const login = (conn: SMTPConnection, method: string, pass: string) =>
    new Promise<Error | null>((resolve) => {
      conn.login({ user: 'probe@a.test', pass, method }, (err) => resolve(err))
    })

  // Registered as XOAUTH2, the handler is passed over: why customName() exists.
  const plainLines: string[] = []
  const plain = await scriptedServer(t, script(plainLines))
  const xoauth2 = { ran: false }
  const swapped = await smtpClient(t, plain.port, {
    ignoreTLS: true,
    customAuth: {
      XOAUTH2: () => {
        xoauth2.ran = true
        return Promise.resolve()
      },
    },
  })
  await smtpConnect(swapped.conn)
  await login(swapped.conn, 'XOAUTH2', 'secret')
  assert.ok(
    !xoauth2.ran && plainLines[0]?.startsWith('AUTH PLAIN'),
    `${NM}'s login() now runs a customAuth handler registered as XOAUTH2 (it used to pick another mechanism when auth.oauth2 is missing): ` +
      `customName() in ${SMTP_SESSION} (MAILPROBE-XOAUTH2) may be unnecessary; review it before moving the pin; ${SEE}`,
  )

  // Registered under our own name, it runs although the server does not advertise that name.
  const customLines: string[] = []
  const custom = await scriptedServer(t, script(customLines))
  const ran: { method?: string; status?: number } = {}
  const named = await smtpClient(t, custom.port, {
    ignoreTLS: true,
    customAuth: {
      'MAILPROBE-XOAUTH2': async (ctx) => {
        ran.method = ctx.method
        const reply = await ctx.sendCommand('AUTH XOAUTH2 dG9rZW4=')
        ran.status = reply.status
        if (reply.status !== 235) throw new Error(reply.response)
      },
    },
  })
  await smtpConnect(named.conn)
  const err = await login(named.conn, 'MAILPROBE-XOAUTH2', '') // smtp-session passes '' when there is no password
  const message = `${NM}'s login({method}) no longer runs the customAuth handler registered under that name (MAILPROBE-XOAUTH2, not advertised by the server, no password): ${SMTP_SESSION} sends XOAUTH2 that way (customName()); ${SEE}`
  assert.equal(err, null, `${message}: ${err?.message ?? ''}`)
  assert.equal(ran.method, 'MAILPROBE-XOAUTH2', message)
  assert.deepEqual(customLines, ['AUTH XOAUTH2 dG9rZW4='], message)
  assert.equal(
    ran.status,
    235,
    `${NM}'s customAuth sendCommand() no longer resolves with the reply's status; ${SEE}`,
  )
})

// ---------------------------------------------------------------------------------------------------
// imapflow: ImapFlow, as src/protocol/imap-session.ts drives it. test/unit/imap-session.test.ts has the
// source-level guards; these run imapflow against a scripted server and name the pinned version.

interface ImapflowInternals {
  authenticate(): Promise<boolean>
  authCapabilities: Map<string, boolean>
  upgradeTimeout: ReturnType<typeof setTimeout> | null
  exec(command: string, attributes: { type: string; value: string }[]): Promise<{ next(): void }>
}
const imapflowInternals = (client: ImapFlow) => client as unknown as ImapflowInternals

/** Answers every command with OK (CAPABILITY, ID, NAMESPACE and LOGOUT with their untagged data). */
function imapResponder(greeting: string, capabilities: string) {
  return async (c: ScriptConnection) => {
    c.line(greeting)
    for (;;) {
      const line = await c.expect()
      const [tag = '', verb = ''] = line.split(' ')
      switch (verb.toUpperCase()) {
        case '':
          continue // a continuation
        case 'CAPABILITY':
          c.line(`* CAPABILITY ${capabilities}`)
          break
        case 'ID':
          c.line('* ID NIL')
          break
        case 'NAMESPACE':
          c.line('* NAMESPACE (("" "/")) NIL NIL')
          break
        case 'STARTTLS':
          c.line(`${tag} OK Begin TLS negotiation now`)
          await c.closed()
          return
        case 'LOGOUT':
          c.line('* BYE Logging out')
          c.line(`${tag} OK Logout completed`)
          c.close()
          return
      }
      c.line(`${tag} OK done`)
    }
  }
}

/** An ImapFlow on an already connected socket through the public transport option, as ImapSession sets it up. */
async function imapClient(
  t: TestContext,
  port: number,
  options: ImapFlowOptions,
  upgrade?: ImapTransport['upgrade'],
): Promise<ImapFlow> {
  const socket = await tcp(port)
  const transport: ImapTransport = {
    connect: (_opts, onConnect) => {
      setImmediate(onConnect)
      return socket
    },
    ...(upgrade ? { upgrade } : {}),
  }
  const client = new ImapFlow({
    host: '127.0.0.1',
    port,
    secure: false,
    logger: false,
    disableAutoIdle: true,
    disableCompression: true,
    disableAutoEnable: true,
    transport,
    ...options,
  })
  client.on('error', () => undefined)
  t.after(() => {
    client.close()
    socket.destroy()
  })
  return client
}

/** Wraps authenticate() on the instance as ImapSession does; `decide` sets the credentials. */
function wrapAuthenticate(client: ImapFlow, server: ScriptedServer, decide: () => void) {
  const internals = imapflowInternals(client)
  assert.equal(
    typeof internals.authenticate,
    'function',
    `${IF}'s ImapFlow.authenticate() is gone: ${IMAP_SESSION} wraps it to decide the login itself; ${SEE}`,
  )
  const original = internals.authenticate.bind(client)
  const seen: { calls: number; receivedBefore?: string[] } = { calls: 0 }
  internals.authenticate = () => {
    seen.calls++
    seen.receivedBefore = [...server.received]
    decide()
    return original()
  }
  return seen
}

test('imapflow internals: connect() logs in through authenticate(), which reads options.auth when it runs; LOGIN is marked in authCapabilities', async (t) => {
  const caps = 'IMAP4rev1 ID NAMESPACE UIDPLUS'
  const server = await scriptedServer(t, imapResponder(`* OK [CAPABILITY ${caps}] ready`, caps))
  const client = await imapClient(t, server.port, { doSTARTTLS: false })
  assert.equal(
    typeof imapflowInternals(client).authenticate,
    'function',
    `${IF}'s ImapFlow.authenticate() is gone: ${IMAP_SESSION} wraps it to decide the login itself; ${SEE}`,
  )
  assert.ok(
    imapflowInternals(client).authCapabilities instanceof Map,
    `${IF}'s ImapFlow.authCapabilities is no longer a Map: ImapSession.mechanismUsed reads it; ${SEE}`,
  )
  const seen = wrapAuthenticate(client, server, () => {
    client.options.auth = { user: 'probe', pass: 'secret', loginMethod: 'LOGIN' }
  })
  await client.connect()
  assert.equal(
    seen.calls,
    1,
    `${IF}'s connect() no longer logs in through this.authenticate() (called ${seen.calls} times): ${IMAP_SESSION}'s login hook would not run, or run twice; ${SEE}`,
  )
  assert.ok(
    seen.receivedBefore?.some((l) => / ID /.test(` ${l} `)) === true &&
      !seen.receivedBefore.some((l) => / (LOGIN|AUTHENTICATE|NAMESPACE) /i.test(` ${l} `)),
    `${IF} no longer calls authenticate() after STARTTLS and ID and before any login command and NAMESPACE (had sent ${JSON.stringify(seen.receivedBefore)}): ${IMAP_SESSION}'s login hook must see the final capability list and run before credentials are sent; ${SEE}`,
  )
  assert.ok(
    server.received.some((l) => /^\S+ LOGIN "?probe"? /.test(l)),
    `${IF}'s authenticate() did not log in with the options.auth set right before it ran (server got ${JSON.stringify(server.received)}): ` +
      `${IMAP_SESSION} hands over the credentials only then; ${SEE}`,
  )
  assert.equal(
    imapflowInternals(client).authCapabilities.get('LOGIN'),
    true,
    `${IF} no longer marks the LOGIN command as authCapabilities.get('LOGIN') === true: ImapSession.mechanismUsed reports IMAP-LOGIN from it; ${SEE}`,
  )

  // exec(): how uidExpunge() sends UID EXPUNGE; the response must be released with next().
  assert.equal(
    typeof imapflowInternals(client).exec,
    'function',
    `${IF}'s ImapFlow.exec() is gone: uidExpunge() in ${IMAP_SESSION} sends UID EXPUNGE through it; ${SEE}`,
  )
  const response = await imapflowInternals(client).exec('UID EXPUNGE', [{ type: 'SEQUENCE', value: '5:7' }])
  assert.equal(
    typeof response.next,
    'function',
    `${IF}'s exec() no longer resolves with a response to release with next(): uidExpunge() in ${IMAP_SESSION} calls it; ${SEE}`,
  )
  response.next()
  assert.ok(
    server.received.some((l) => /^\S+ UID EXPUNGE 5:7$/.test(l)),
    `${IF}'s exec('UID EXPUNGE', [SEQUENCE]) no longer sends "UID EXPUNGE <uids>" (server got ${JSON.stringify(server.received)}): uidExpunge() in ${IMAP_SESSION}; ${SEE}`,
  )
  await client.logout()
})

test('imapflow internals: with an access token it prefers OAUTHBEARER, and deleting AUTH=OAUTHBEARER from capabilities before login forces XOAUTH2', async (t) => {
  const caps = 'IMAP4rev1 NAMESPACE SASL-IR AUTH=OAUTHBEARER AUTH=XOAUTH2'
  const run = async (hide: boolean) => {
    const server = await scriptedServer(t, imapResponder(`* OK [CAPABILITY ${caps}] ready`, caps))
    const client = await imapClient(t, server.port, { doSTARTTLS: false })
    wrapAuthenticate(client, server, () => {
      client.options.auth = { user: 'probe', accessToken: 'token' }
      if (hide) client.capabilities.delete('AUTH=OAUTHBEARER')
    })
    await client.connect()
    const mechanism = server.received.map((l) => /^\S+ AUTHENTICATE (\S+)/.exec(l)?.[1]).find(Boolean)
    const marked = [...imapflowInternals(client).authCapabilities].filter(([, used]) => used).map(([k]) => k)
    await client.logout()
    return { mechanism, marked }
  }
  const preferred = await run(false)
  assert.equal(
    preferred.mechanism,
    'OAUTHBEARER',
    `${IF} no longer prefers OAUTHBEARER for an access token when both are offered (used ${String(preferred.mechanism)}): ` +
      `${IMAP_SESSION} hides AUTH=OAUTHBEARER to force XOAUTH2, review whether that is still needed; ${SEE}`,
  )
  const forced = await run(true)
  assert.equal(
    forced.mechanism,
    'XOAUTH2',
    `${IF} did not use XOAUTH2 after AUTH=OAUTHBEARER was deleted from client.capabilities before login (used ${String(forced.mechanism)}): ` +
      `${IMAP_SESSION} forces XOAUTH2 that way; ${SEE}`,
  )
  assert.deepEqual(
    forced.marked,
    ['AUTH=XOAUTH2'],
    `${IF} no longer marks the SASL mechanism used as authCapabilities.get('AUTH=<name>') === true: ImapSession.mechanismUsed reads it; ${SEE}`,
  )
})

test('imapflow internals: the fixed STARTTLS timer is armed in this.upgradeTimeout before transport.upgrade() runs, and login waits for the upgrade', async (t) => {
  const caps = 'IMAP4rev1 STARTTLS AUTH=PLAIN'
  const server = await scriptedServer(t, imapResponder(`* OK [CAPABILITY ${caps}] ready`, caps))
  const seen: { timer?: unknown } = {}
  const stop = new Error('stopped by the test after the check')
  const client: ImapFlow = await imapClient(t, server.port, { doSTARTTLS: true }, () => {
    const internals = imapflowInternals(client)
    seen.timer = internals.upgradeTimeout
    // As imap-session.ts does: the probe's deadline rules the handshake, not imapflow's fixed 10 s.
    if (internals.upgradeTimeout) clearTimeout(internals.upgradeTimeout)
    throw stop
  })
  const auth = wrapAuthenticate(client, server, () => undefined)
  await assert.rejects(client.connect(), (err) => err === stop)
  assert.ok(
    seen.timer !== null && typeof seen.timer === 'object' && 'refresh' in seen.timer,
    `${IF}'s upgradeToSTARTTLS() no longer has its fixed timer (UPGRADE_TIMEOUT) in this.upgradeTimeout when transport.upgrade() is called ` +
      `(found ${String(seen.timer)}): ${IMAP_SESSION} clears it there so that the probe deadline rules the handshake; ${SEE}`,
  )
  assert.equal(
    auth.calls,
    0,
    `${IF} called authenticate() although the STARTTLS upgrade failed: ${IMAP_SESSION}'s login hook expects to run after STARTTLS; ${SEE}`,
  )
})

test('imapflow internals: messageDelete() would fall back to a bare EXPUNGE, which is why uidExpunge() uses exec()', () => {
  const expunge = readFileSync(new URL(import.meta.resolve('imapflow/lib/commands/expunge.js')), 'utf8')
  assert.match(
    expunge,
    /byUid \? 'UID EXPUNGE' : 'EXPUNGE'/,
    `${IF}'s messageDelete()/expunge no longer chooses between UID EXPUNGE and a bare EXPUNGE by UIDPLUS at that moment: ` +
      `check whether uidExpunge() in ${IMAP_SESSION} can use messageDelete(range, { uid: true }) now; ${SEE}`,
  )
  const authenticate = readFileSync(
    new URL(import.meta.resolve('imapflow/lib/commands/authenticate.js')),
    'utf8',
  )
  assertInOrder(
    authenticate,
    ["connection.capabilities.has('AUTH=OAUTHBEARER')", "connection.capabilities.has('AUTH=XOAUTH2')"],
    `${IF}'s OAuth login no longer picks OAUTHBEARER from client.capabilities first: ${IMAP_SESSION}'s XOAUTH2 forcing needs review; ${SEE}`,
  )
})
