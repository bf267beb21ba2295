// The stack's Dovecot oauth2 passdb: XOAUTH2 and OAUTHBEARER on IMAP, POP3 and submission, each token checked by
// RFC 7662 introspection at the test's own endpoint (stack-issued certificate); password logins untouched.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { request } from 'node:https'
import { connect as connectTcp, type Socket } from 'node:net'
import { test, type TestContext } from 'node:test'
import { connect as connectTls } from 'node:tls'
import { mailStack } from '../helpers/stack.ts'
import { tokenEndpoint, type TokenEndpoint } from '../servers/token-endpoint.ts'

const stack = mailStack()
const ca = readFileSync(stack.ca)
const OAUTH_USER = stack.oauth2.user
const [PROBE_USER, PROBE_PASSWORD] = stack.users.probe
const [ALICE] = stack.users.alice
const CLIENTS = {
  'oauth-client': { secret: 'oauth-client-secret', username: OAUTH_USER },
  'alice-client': { secret: 'alice-client-secret', username: ALICE },
}
/** Each read waits this long at most: a stalled dialogue fails the test instead of hanging it. */
const READ_MS = 10_000

/** The endpoint on the port Dovecot asks, serving the stack's certificate (closed after the test). */
function endpointFor(t: TestContext): Promise<TokenEndpoint> {
  return tokenEndpoint(t, { clients: CLIENTS, port: stack.oauth2.introspectionPort, tls: stack.oauth2.tls })
}

/** An access token by the client_credentials grant, over HTTPS that trusts only the stack's CA. */
async function issueToken(endpoint: TokenEndpoint, clientId: keyof typeof CLIENTS): Promise<string> {
  const form = new URLSearchParams({
    grant_type: 'client_credentials',
    client_id: clientId,
    client_secret: CLIENTS[clientId].secret,
  }).toString()
  const req = request(endpoint.url, {
    method: 'POST',
    ca: endpoint.ca,
    // no pooled keep-alive socket: it could still point at the previous test's endpoint (same port)
    agent: false,
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    signal: AbortSignal.timeout(READ_MS),
  })
  req.end(form)
  const [res] = (await once(req, 'response')) as [IncomingMessage]
  const chunks: Buffer[] = []
  for await (const chunk of res) chunks.push(chunk as Buffer)
  assert.equal(res.statusCode, 200)
  const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { access_token: string }
  return body.access_token
}

const introspections = (endpoint: TokenEndpoint) => endpoint.requests.filter((r) => r.path === '/introspect')

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64')
/** Google's XOAUTH2 initial response. */
const xoauth2 = (user: string, token: string) => b64(`user=${user}\x01auth=Bearer ${token}\x01\x01`)
/** RFC 7628 OAUTHBEARER initial response (GS2 header with the authzid, then key=value pairs). */
const oauthbearer = (user: string, token: string) => b64(`n,a=${user},\x01auth=Bearer ${token}\x01\x01`)

/** A raw line-based session on 127.0.0.1 (CRLF lines), with STARTTLS; reads give up after READ_MS. */
class Session {
  readonly transcript: string[] = []
  #socket: Socket
  #buffer = ''
  #lines: string[] = []
  #failure: Error | undefined
  #wake: (() => void) | undefined
  #detach: () => void = () => undefined

  private constructor(socket: Socket) {
    this.#socket = socket
    this.#attach(socket)
  }

  static async open(t: TestContext, port: number, tls: boolean): Promise<Session> {
    const socket = tls ? connectTls({ host: '127.0.0.1', port, ca }) : connectTcp({ host: '127.0.0.1', port })
    await once(socket, tls ? 'secureConnect' : 'connect')
    const session = new Session(socket)
    t.after(() => session.close())
    return session
  }

  #attach(socket: Socket) {
    const onData = (chunk: Buffer) => {
      this.#buffer += chunk.toString('utf8')
      let end
      while ((end = this.#buffer.indexOf('\r\n')) >= 0) {
        this.#lines.push(this.#buffer.slice(0, end))
        this.#buffer = this.#buffer.slice(end + 2)
      }
      this.#wake?.()
    }
    const onError = (err: Error) => {
      this.#failure ??= err
      this.#wake?.()
    }
    const onClose = () => onError(new Error('connection closed'))
    socket.on('data', onData).on('error', onError).on('close', onClose)
    this.#detach = () => socket.off('data', onData).off('error', onError).off('close', onClose)
  }

  async read(): Promise<string> {
    const deadline = Date.now() + READ_MS
    for (;;) {
      const line = this.#lines.shift()
      if (line !== undefined) {
        this.transcript.push(`S: ${line}`)
        return line
      }
      if (this.#failure) throw new Error(`${this.#failure.message}\n${this.transcript.join('\n')}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no reply in ${READ_MS} ms\n${this.transcript.join('\n')}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.#wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      this.#wake = undefined
    }
  }

  /** Reads until a line matches `last`; returns every line read. */
  async readUntil(last: RegExp): Promise<string[]> {
    const lines = [await this.read()]
    while (!last.test(lines.at(-1) ?? '')) lines.push(await this.read())
    return lines
  }

  send(line: string) {
    this.transcript.push(`C: ${line}`)
    this.#socket.write(`${line}\r\n`)
  }

  async upgrade() {
    this.#detach()
    const secure = connectTls({ socket: this.#socket, host: '127.0.0.1', ca })
    await once(secure, 'secureConnect')
    this.#socket = secure
    this.#attach(secure)
  }

  close() {
    this.#socket.destroy()
  }
}

// ---------------------------------------------------------------- IMAP (implicit TLS)
async function imaps(t: TestContext) {
  const s = await Session.open(t, stack.ports.imaps, true)
  assert.match(await s.read(), /^\* OK /)
  return s
}
/** Sends a tagged command and returns its lines up to the tagged reply (or a `+` continuation). */
async function imapCommand(s: Session, tag: string, command: string) {
  s.send(`${tag} ${command}`)
  return s.readUntil(new RegExp(`^(${tag} |\\+)`))
}
const last = (lines: string[]) => lines.at(-1) ?? ''

// ---------------------------------------------------------------- POP3 (implicit TLS)
async function pop3s(t: TestContext) {
  const s = await Session.open(t, stack.ports.pop3s, true)
  assert.match(await s.read(), /^\+OK /)
  return s
}

// ---------------------------------------------------------------- SMTP submission (STARTTLS)
/** 587 after STARTTLS and the second EHLO; returns the session and that EHLO's lines. */
async function submission(t: TestContext) {
  const s = await Session.open(t, stack.ports.submission, false)
  assert.match(last(await s.readUntil(/^\d{3} /)), /^220 /)
  s.send('EHLO probe.test')
  assert.match(last(await s.readUntil(/^\d{3} /)), /^250 /)
  s.send('STARTTLS')
  assert.match(last(await s.readUntil(/^\d{3} /)), /^220 /)
  await s.upgrade()
  s.send('EHLO probe.test')
  const ehlo = await s.readUntil(/^\d{3} /)
  assert.match(last(ehlo), /^250 /)
  return { s, ehlo }
}
const smtpReply = async (s: Session) => last(await s.readUntil(/^\d{3} /))
const authLine = (ehlo: string[]) => ehlo.find((l) => /^250[- ]AUTH /.test(l)) ?? ''

/**
 * Dovecot's error for a refused token: a base64 JSON challenge before the final failure, which the client must
 * answer first. XOAUTH2 says status "401" (as Google does), OAUTHBEARER "invalid_token" (RFC 7628 3.2.2).
 */
function assertErrorChallenge(challenge: string, mechanism: 'XOAUTH2' | 'OAUTHBEARER') {
  const error: unknown = JSON.parse(Buffer.from(challenge, 'base64').toString('utf8'))
  assert.deepEqual(
    error,
    mechanism === 'XOAUTH2'
      ? { status: '401', schemes: 'bearer', scope: 'mail' }
      : { status: 'invalid_token' },
  )
}

test('mailstack oauth2: IMAPS AUTHENTICATE XOAUTH2 with an active token logs oauth@mail.test in (one introspection POST)', async (t) => {
  const endpoint = await endpointFor(t)
  const token = await issueToken(endpoint, 'oauth-client')
  const s = await imaps(t)
  const caps = await imapCommand(s, 'a0', 'CAPABILITY')
  assert.match(caps.join('\n'), /AUTH=XOAUTH2/)
  assert.match(caps.join('\n'), /AUTH=OAUTHBEARER/)
  assert.match(
    last(await imapCommand(s, 'a1', `AUTHENTICATE XOAUTH2 ${xoauth2(OAUTH_USER, token)}`)),
    /^a1 OK /,
  )
  // the user has a mailbox of its own
  assert.match(last(await imapCommand(s, 'a2', 'SELECT INBOX')), /^a2 OK \[READ-WRITE\]/)
  // Dovecot's introspection_mode = post: the token as a form, with empty client credentials, no Authorization
  assert.deepEqual(
    introspections(endpoint).map(({ method, contentType, authorization, form }) => ({
      method,
      contentType,
      authorization,
      form,
    })),
    [
      {
        method: 'POST',
        contentType: 'application/x-www-form-urlencoded',
        authorization: undefined,
        form: { token, client_id: '', client_secret: '' },
      },
    ],
  )
})

test('mailstack oauth2: IMAPS AUTHENTICATE OAUTHBEARER (RFC 7628) with an active token succeeds', async (t) => {
  const endpoint = await endpointFor(t)
  const token = await issueToken(endpoint, 'oauth-client')
  const s = await imaps(t)
  const reply = await imapCommand(s, 'a1', `AUTHENTICATE OAUTHBEARER ${oauthbearer(OAUTH_USER, token)}`)
  assert.match(last(reply), /^a1 OK /)
  assert.equal(introspections(endpoint).length, 1)
})

test('mailstack oauth2: POP3S AUTH XOAUTH2 and AUTH OAUTHBEARER with an active token succeed', async (t) => {
  const endpoint = await endpointFor(t)
  const token = await issueToken(endpoint, 'oauth-client')
  const capa = await pop3s(t)
  capa.send('CAPA')
  const sasl = (await capa.readUntil(/^\.$/)).find((l) => l.startsWith('SASL ')) ?? ''
  assert.match(sasl, / XOAUTH2( |$)/)
  assert.match(sasl, / OAUTHBEARER( |$)/)
  capa.send(`AUTH XOAUTH2 ${xoauth2(OAUTH_USER, token)}`)
  assert.match(await capa.read(), /^\+OK /)
  capa.send('STAT')
  assert.match(await capa.read(), /^\+OK \d+ \d+/)
  const bearer = await pop3s(t)
  bearer.send(`AUTH OAUTHBEARER ${oauthbearer(OAUTH_USER, token)}`)
  assert.match(await bearer.read(), /^\+OK /)
  assert.equal(introspections(endpoint).length, 2)
})

test('mailstack oauth2: submission 587 offers XOAUTH2 and OAUTHBEARER after STARTTLS, AUTH XOAUTH2 is 235', async (t) => {
  const endpoint = await endpointFor(t)
  const token = await issueToken(endpoint, 'oauth-client')
  const { s, ehlo } = await submission(t)
  assert.match(authLine(ehlo), /^250[- ]AUTH .*\bXOAUTH2\b/)
  assert.match(authLine(ehlo), /\bOAUTHBEARER\b/)
  assert.match(authLine(ehlo), /\bPLAIN\b/)
  s.send(`AUTH XOAUTH2 ${xoauth2(OAUTH_USER, token)}`)
  assert.match(await smtpReply(s), /^235 /)
  // authenticated as oauth@mail.test: Postfix lets it relay to alice
  s.send(`MAIL FROM:<${OAUTH_USER}>`)
  assert.match(await smtpReply(s), /^250 /)
  s.send(`RCPT TO:<${ALICE}>`)
  assert.match(await smtpReply(s), /^250 /)
  s.send('QUIT')
  assert.equal(introspections(endpoint).length, 1)
})

test('mailstack oauth2: submissions 465 (implicit TLS) offers both and AUTH OAUTHBEARER is 235', async (t) => {
  const endpoint = await endpointFor(t)
  const token = await issueToken(endpoint, 'oauth-client')
  const s = await Session.open(t, stack.ports.smtps, true)
  assert.match(await smtpReply(s), /^220 /)
  s.send('EHLO probe.test')
  const ehlo = await s.readUntil(/^\d{3} /)
  assert.match(authLine(ehlo), /\bXOAUTH2\b/)
  assert.match(authLine(ehlo), /\bOAUTHBEARER\b/)
  s.send(`AUTH OAUTHBEARER ${oauthbearer(OAUTH_USER, token)}`)
  assert.match(await smtpReply(s), /^235 /)
})

test('mailstack oauth2: a revoked token fails: IMAP error challenge then NO, SMTP 334 challenge then 535, POP3 -ERR', async (t) => {
  const endpoint = await endpointFor(t)
  const token = await issueToken(endpoint, 'oauth-client')
  const ok = await imaps(t)
  assert.match(
    last(await imapCommand(ok, 'a1', `AUTHENTICATE XOAUTH2 ${xoauth2(OAUTH_USER, token)}`)),
    /^a1 OK /,
  )
  // no auth cache: the next login asks again and sees the revocation
  endpoint.revoke(token)

  const imap = await imaps(t)
  const challenge = last(await imapCommand(imap, 'a1', `AUTHENTICATE XOAUTH2 ${xoauth2(OAUTH_USER, token)}`))
  assert.match(challenge, /^\+ /)
  assertErrorChallenge(challenge.slice(2), 'XOAUTH2')
  // XOAUTH2: the client answers the error challenge with an empty line
  imap.send('')
  assert.equal(last(await imap.readUntil(/^a1 /)), 'a1 NO [AUTHENTICATIONFAILED] Authentication failed.')

  const { s: smtp } = await submission(t)
  smtp.send(`AUTH XOAUTH2 ${xoauth2(OAUTH_USER, token)}`)
  const smtpChallenge = await smtpReply(smtp)
  assert.match(smtpChallenge, /^334 /)
  assertErrorChallenge(smtpChallenge.slice(4), 'XOAUTH2')
  smtp.send('')
  assert.match(await smtpReply(smtp), /^535 5\.7\.8 Error: authentication failed/)

  const pop3 = await pop3s(t)
  pop3.send(`AUTH XOAUTH2 ${xoauth2(OAUTH_USER, token)}`)
  const popChallenge = await pop3.read()
  assert.match(popChallenge, /^\+ /)
  assertErrorChallenge(popChallenge.slice(2), 'XOAUTH2')
  pop3.send('')
  assert.equal(await pop3.read(), '-ERR [AUTH] Authentication failed.')
  assert.equal(introspections(endpoint).length, 4)
})

test('mailstack oauth2: OAUTHBEARER with an unknown token fails after the error challenge (client answers ^A)', async (t) => {
  const endpoint = await endpointFor(t)
  const imap = await imaps(t)
  const reply = await imapCommand(
    imap,
    'a1',
    `AUTHENTICATE OAUTHBEARER ${oauthbearer(OAUTH_USER, 'at-never-issued')}`,
  )
  const challenge = last(reply)
  assert.match(challenge, /^\+ /)
  assertErrorChallenge(challenge.slice(2), 'OAUTHBEARER')
  // RFC 7628 3.2.3: the client answers the error with a single %x01
  imap.send(b64('\x01'))
  assert.match(last(await imap.readUntil(/^a1 /)), /^a1 NO /)
  assert.deepEqual(
    introspections(endpoint).map((r) => r.form['token']),
    ['at-never-issued'],
  )
})

test('mailstack oauth2: a token is good only for the user it was issued to', async (t) => {
  const endpoint = await endpointFor(t)
  const aliceToken = await issueToken(endpoint, 'alice-client')
  const imap = await imaps(t)
  const challenge = last(
    await imapCommand(imap, 'a1', `AUTHENTICATE XOAUTH2 ${xoauth2(OAUTH_USER, aliceToken)}`),
  )
  assert.match(challenge, /^\+ /)
  imap.send('')
  assert.match(last(await imap.readUntil(/^a1 /)), /^a1 NO /)
  // the same token, for the user it names, is fine
  const right = await imaps(t)
  assert.match(
    last(await imapCommand(right, 'a1', `AUTHENTICATE XOAUTH2 ${xoauth2(ALICE, aliceToken)}`)),
    /^a1 OK /,
  )
  assert.equal(introspections(endpoint).length, 2)
})

test('mailstack oauth2: a password is no bearer token, and a token no password', async (t) => {
  const endpoint = await endpointFor(t)
  const token = await issueToken(endpoint, 'oauth-client')
  // XOAUTH2 with probe's real password: decided by introspection alone, never by the users file
  const imap = await imaps(t)
  const reply = await imapCommand(imap, 'a1', `AUTHENTICATE XOAUTH2 ${xoauth2(PROBE_USER, PROBE_PASSWORD)}`)
  assert.match(last(reply), /^\+ /)
  imap.send('')
  assert.match(last(await imap.readUntil(/^a1 /)), /^a1 NO /)
  assert.deepEqual(
    introspections(endpoint).map((r) => r.form['token']),
    [PROBE_PASSWORD],
  )
  // LOGIN with an active token as the password: the users file decides, the endpoint is not asked
  const login = await imaps(t)
  assert.match(last(await imapCommand(login, 'a1', `LOGIN ${OAUTH_USER} ${token}`)), /^a1 NO /)
  assert.equal(introspections(endpoint).length, 1)
})

test('mailstack oauth2: password logins for probe@mail.test still work on IMAP, POP3 and submission, without introspection', async (t) => {
  const endpoint = await endpointFor(t)
  const imap = await imaps(t)
  assert.match(last(await imapCommand(imap, 'a1', `LOGIN ${PROBE_USER} ${PROBE_PASSWORD}`)), /^a1 OK /)

  const pop3 = await pop3s(t)
  pop3.send(`USER ${PROBE_USER}`)
  assert.match(await pop3.read(), /^\+OK/)
  pop3.send(`PASS ${PROBE_PASSWORD}`)
  assert.match(await pop3.read(), /^\+OK /)

  const { s: smtp } = await submission(t)
  smtp.send(`AUTH PLAIN ${b64(`\0${PROBE_USER}\0${PROBE_PASSWORD}`)}`)
  assert.match(await smtpReply(smtp), /^235 /)
  assert.equal(introspections(endpoint).length, 0)
})

test('mailstack oauth2: with no endpoint listening OAuth logins fail at once and password logins go on', async (t) => {
  const endpoint = await endpointFor(t)
  const token = await issueToken(endpoint, 'oauth-client')
  await endpoint.close()
  const started = Date.now()
  const imap = await imaps(t)
  const reply = last(await imapCommand(imap, 'a1', `AUTHENTICATE XOAUTH2 ${xoauth2(OAUTH_USER, token)}`))
  // a temporary failure (connection refused): no error challenge, straight to NO
  assert.match(reply, /^a1 NO \[UNAVAILABLE\] Temporary authentication failure\./)
  // the refused connection fails at once; only Dovecot's auth_failure_delay (<= 2 s) holds the reply back
  assert.ok(Date.now() - started < 3000, `${Date.now() - started} ms`)
  const { s: smtp } = await submission(t)
  smtp.send(`AUTH XOAUTH2 ${xoauth2(OAUTH_USER, token)}`)
  // Postfix 3.7 does not pass Dovecot's temporary failure on as 454
  assert.match(await smtpReply(smtp), /^535 5\.7\.8 /)
  const login = await imaps(t)
  assert.match(last(await imapCommand(login, 'a1', `LOGIN ${PROBE_USER} ${PROBE_PASSWORD}`)), /^a1 OK /)
})

test('mailstack oauth2: a stalled endpoint fails the OAuth login after the 2 s timeout without holding up other logins', async (t) => {
  const endpoint = await endpointFor(t)
  const token = await issueToken(endpoint, 'oauth-client')
  endpoint.delayMs = 6000
  const started = Date.now()
  const oauth = (async () => {
    const imap = await imaps(t)
    return last(await imapCommand(imap, 'a1', `AUTHENTICATE XOAUTH2 ${xoauth2(OAUTH_USER, token)}`))
  })()
  // while Dovecot's auth process waits for the endpoint, a password login completes
  await new Promise((resolve) => setTimeout(resolve, 300))
  const loginStarted = Date.now()
  const login = await imaps(t)
  assert.match(last(await imapCommand(login, 'a1', `LOGIN ${PROBE_USER} ${PROBE_PASSWORD}`)), /^a1 OK /)
  assert.ok(Date.now() - loginStarted < 1500, `password login took ${Date.now() - loginStarted} ms`)
  assert.match(await oauth, /^a1 NO /)
  const took = Date.now() - started
  assert.ok(took >= 1900 && took < 5800, `OAuth login failed after ${took} ms`)
  assert.equal(introspections(endpoint).length, 1)
})
