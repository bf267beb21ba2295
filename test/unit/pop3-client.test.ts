// Pop3Client against scripted servers (split replies, dot-stuffing, limits, aborts, every login), and the pop3-reply parsers.
import assert from 'node:assert/strict'
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto'
import { test, type TestContext } from 'node:test'
import { parseConfig } from '../../src/config.ts'
import type { TlsConfig } from '../../src/protocol/connection.ts'
import { DeadlineError, ProtocolError } from '../../src/errors.ts'
import { createProbeLogger, silentLogger } from '../../src/logger.ts'
import { connectTcp } from '../../src/protocol/connection.ts'
import { Pop3Client, type Pop3ReplyLimits } from '../../src/protocol/pop3-client.ts'
import {
  apopTimestamp,
  parseCapa,
  parseListLine,
  parseStat,
  parseStatus,
  parseUidlLine,
  responseCode,
  saslMechanisms,
} from '../../src/protocol/pop3-reply.ts'
import { certs } from '../servers/certs.ts'
import { scriptedServer, type ScriptConnection } from '../servers/scripted.ts'

const b64 = (text: string | Buffer) => Buffer.from(text).toString('base64')
const unb64 = (text: string) => Buffer.from(text, 'base64').toString('utf8')
const md5 = (text: string) => createHash('md5').update(text).digest('hex')

/** A client connected to a scripted server, with its debug log and an abort switch. */
async function connect(
  t: TestContext,
  script: (c: ScriptConnection) => Promise<void>,
  options: { limits?: Partial<Pop3ReplyLimits>; implicitTls?: { cert: Buffer; key: Buffer } } = {},
) {
  const server = await scriptedServer(
    t,
    script,
    options.implicitTls ? { implicitTls: options.implicitTls } : {},
  )
  const controller = new AbortController()
  const socket = await connectTcp('127.0.0.1', server.port, controller.signal)
  const { logger, transcript } = createProbeLogger(silentLogger, {})
  const client = new Pop3Client(socket, {
    signal: controller.signal,
    logger,
    ...(options.limits === undefined ? {} : { limits: options.limits }),
  })
  t.after(() => client.close())
  return { server, client, controller, log: () => transcript.lines().join('\n') }
}

/** Sends text one byte per write, so every reply arrives split at every possible place. */
const bytewise = (c: ScriptConnection, text: string) =>
  c.sendChunks(
    Array.from({ length: text.length }, (_, i) => text.charAt(i)),
    1,
  )

const creds = (password: string | undefined, token?: string) => ({
  username: 'probe@mx.test',
  password,
  token,
})

function tlsConfig(yaml: string): TlsConfig {
  const config = parseConfig(
    `modules:\n  m:\n    prober: pop3\n    allowed_targets: [127.0.0.1]\n    pop3:\n      tls_config: ${yaml}\n      auth: { username: u, password: p }\n`,
    'test.yml',
  )
  const module = config.modules['m']!
  assert.equal(module.prober, 'pop3')
  return module.pop3.tls_config
}

// ---------------------------------------------------------------- reading replies

test('pop3 client: a greeting and a CAPA reply split byte by byte are read whole', async (t) => {
  const { client, server } = await connect(t, async (c) => {
    await bytewise(c, '+OK ready <1896.697170952@dbc.mtview.ca.us>\r\n')
    await c.expect('CAPA')
    await bytewise(c, '+OK list follows\r\nUSER\r\nSASL PLAIN SCRAM-SHA-256\r\nSTLS\r\n.\r\n')
    await c.closed()
  })
  const greeting = await client.greeting()
  assert.equal(greeting.text, 'ready <1896.697170952@dbc.mtview.ca.us>')
  assert.equal(greeting.timestamp, '<1896.697170952@dbc.mtview.ca.us>')
  const capa = await client.capa()
  assert.deepEqual([...capa.keys()], ['USER', 'SASL', 'STLS'])
  assert.deepEqual(capa.get('SASL'), ['PLAIN', 'SCRAM-SHA-256'])
  assert.equal(client.capabilities, capa)
  assert.deepEqual(server.errors, [])
})

test('pop3 client: a "." terminator split across reads ends the reply, and the next command works', async (t) => {
  const { client } = await connect(t, async (c) => {
    c.line('+OK ready')
    await c.expect('TOP 1 0')
    await c.sendChunks(['+OK\r\nSubject: hi\r\nX-Probe: 1\r\n\r\n.', '\r', '\n'], 20)
    await c.expect('NOOP')
    c.line('+OK')
    await c.closed()
  })
  await client.greeting()
  assert.equal(await client.top(1, 0), 'Subject: hi\r\nX-Probe: 1\r\n')
  await client.noop()
})

test('pop3 client: dot-stuffed lines are unstuffed, and a lone ".." is a line holding "."', async (t) => {
  const { client } = await connect(t, async (c) => {
    c.line('+OK ready')
    await c.expect('RETR 2')
    await c.sendChunks(['+OK 40 octets\r\nSubject: x\r\n\r\n..leading dot\r', '\n..\r\n...\r\n.\r\n'])
    await c.closed()
  })
  await client.greeting()
  assert.equal(await client.retr(2), 'Subject: x\r\n\r\n.leading dot\r\n.\r\n..')
})

test('pop3 client: a multi-line reply over the size limit rejects and closes the connection', async (t) => {
  const { client } = await connect(
    t,
    async (c) => {
      c.line('+OK ready')
      await c.expect('RETR 1')
      c.send('+OK\r\n' + 'x'.repeat(60) + '\r\n' + 'y'.repeat(60) + '\r\n.\r\n')
      await c.closed()
    },
    { limits: { retr: 100 } },
  )
  await client.greeting()
  await assert.rejects(client.retr(1), /multi-line reply longer than 100 bytes/)
  assert.equal(client.socket.destroyed, true)
  await assert.rejects(client.noop(), /closed/)
})

test('pop3 client: -ERR rejects with a ProtocolError carrying the server text', async (t) => {
  const { client } = await connect(t, async (c) => {
    c.line('+OK ready')
    await c.expect('STAT')
    c.line('-ERR [SYS/TEMP] maildrop locked')
    await c.closed()
  })
  await client.greeting()
  const err = await client.stat().then(
    () => assert.fail('STAT should have failed'),
    (e: unknown) => e,
  )
  assert.ok(err instanceof ProtocolError)
  assert.equal(err.expected, '+OK')
  assert.equal(err.reply, '-ERR [SYS/TEMP] maildrop locked')
})

test('pop3 client: a server that closes in the middle of a multi-line reply makes the command reject', async (t) => {
  const { client } = await connect(t, async (c) => {
    c.line('+OK ready')
    await c.expect('UIDL')
    c.send('+OK\r\n1 abc\r\n')
    c.close()
  })
  await client.greeting()
  await assert.rejects(client.uidl(), /connection closed by server/)
})

test('pop3 client: an abort rejects the pending command at once with DeadlineError', async (t) => {
  const { client, controller } = await connect(t, (c) => c.closed())
  const start = performance.now()
  setTimeout(() => controller.abort(), 50)
  await assert.rejects(client.greeting(), DeadlineError)
  assert.ok(performance.now() - start < 500, 'rejected promptly')
  assert.equal(client.socket.destroyed, true)
})

test('pop3 client: STAT, UIDL, LIST, DELE and QUIT parse their replies and QUIT closes the socket', async (t) => {
  const { client } = await connect(t, async (c) => {
    c.line('+OK ready')
    await c.expect('STAT')
    c.line('+OK 2 320')
    await c.expect('UIDL')
    c.line('+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.')
    await c.expect('LIST')
    c.line('+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.')
    await c.expect('DELE 2')
    c.line('+OK message 2 deleted')
    await c.expect('QUIT')
    c.line('+OK bye')
    await c.closed()
  })
  await client.greeting()
  assert.deepEqual(await client.stat(), { messages: 2, size: 320 })
  assert.deepEqual(await client.uidl(), [
    { id: 1, uid: 'whqtswO00WBw418f9t5JxYwZ' },
    { id: 2, uid: 'QhdPYR:00WBw1Ph7x7' },
  ])
  assert.deepEqual(await client.list(), [
    { id: 1, size: 120 },
    { id: 2, size: 200 },
  ])
  await client.dele(2)
  await client.quit()
  assert.equal(client.socket.destroyed, true)
})

test('pop3 client: a STAT reply without counts is a protocol error, not NaN', async (t) => {
  const { client } = await connect(t, async (c) => {
    c.line('+OK ready')
    await c.expect('STAT')
    c.line('+OK maildrop ready')
    await c.closed()
  })
  await client.greeting()
  await assert.rejects(
    client.stat(),
    (err: unknown) => err instanceof ProtocolError && /maildrop ready/.test(err.reply),
  )
})

test('pop3 client: a second command while one is running is refused', async (t) => {
  const { client } = await connect(t, async (c) => {
    c.line('+OK ready')
    await c.expect('NOOP')
    await new Promise((r) => setTimeout(r, 50))
    c.line('+OK')
    await c.closed()
  })
  await client.greeting()
  const first = client.noop()
  await assert.rejects(client.stat(), /already running/)
  await first
})

// ---------------------------------------------------------------- logging in

test('pop3 client: USER/PASS sends the password but logs PASS <redacted>', async (t) => {
  const { client, server, log } = await connect(t, async (c) => {
    c.line('+OK ready')
    await c.expect('USER probe@mx.test')
    c.line('+OK')
    await c.expect('PASS hunter2')
    c.line('+OK logged in')
    await c.closed()
  })
  await client.greeting()
  await client.login('USER', creds('hunter2'))
  assert.deepEqual(server.errors, [])
  assert.match(log(), /C: PASS <redacted>/)
  assert.doesNotMatch(log(), /hunter2/)
})

test('pop3 client: APOP sends md5(timestamp + password) from the greeting and logs no digest', async (t) => {
  const timestamp = '<1896.697170952@dbc.mtview.ca.us>'
  const { client, server, log } = await connect(t, async (c) => {
    c.line(`+OK POP3 server ready ${timestamp}`)
    const line = await c.expect('APOP ')
    const [, user, digest] = line.split(' ')
    // RFC 1939's own example: tanstaaf -> c4c9334bac560ecc979e58001b3e22fb
    const ok = user === 'probe@mx.test' && digest === md5(timestamp + 'tanstaaf')
    c.line(ok ? '+OK maildrop has 1 message' : '-ERR permission denied')
    await c.closed()
  })
  assert.equal(md5(timestamp + 'tanstaaf'), 'c4c9334bac560ecc979e58001b3e22fb')
  await client.greeting()
  await client.login('APOP', creds('tanstaaf'))
  assert.deepEqual(server.errors, [])
  assert.match(log(), /C: APOP probe@mx.test <redacted>/)
  assert.doesNotMatch(log(), /c4c9334bac560ecc979e58001b3e22fb/)
})

test('pop3 client: APOP without a timestamp in the greeting rejects before sending anything', async (t) => {
  const { client, server } = await connect(t, async (c) => {
    c.line('+OK ready')
    await c.closed()
  })
  await client.greeting()
  await assert.rejects(client.login('APOP', creds('x')), /APOP needs a timestamp/)
  assert.deepEqual(server.received, [])
})

test('pop3 client: AUTH CRAM-MD5 answers the challenge with the right HMAC and logs <redacted>', async (t) => {
  const challenge = '<1896.697170952@postoffice.example.net>'
  const { client, server, log } = await connect(t, async (c) => {
    c.line('+OK ready')
    await c.expect(/^AUTH CRAM-MD5$/)
    c.line('+ ' + b64(challenge))
    const [user, digest] = unb64(await c.expect()).split(' ')
    // RFC 2195's example: password tanstaaftanstaaf
    const expected = createHmac('md5', 'tanstaaftanstaaf').update(challenge).digest('hex')
    c.line(user === 'probe@mx.test' && digest === expected ? '+OK' : '-ERR bad digest')
    await c.closed()
  })
  await client.greeting()
  await client.login('CRAM-MD5', creds('tanstaaftanstaaf'))
  assert.deepEqual(server.errors, [])
  assert.match(log(), /C: AUTH CRAM-MD5"?\n.*S: \+ .*\n.*C: <redacted>/)
})

test('pop3 client: AUTH PLAIN goes as an initial response, logged as <redacted>', async (t) => {
  const { client, server, log } = await connect(t, async (c) => {
    c.line('+OK ready')
    const line = await c.expect('AUTH PLAIN ')
    c.line(unb64(line.slice('AUTH PLAIN '.length)) === '\0probe@mx.test\0pw' ? '+OK' : '-ERR no')
    await c.closed()
  })
  await client.greeting()
  await client.login('PLAIN', creds('pw'))
  assert.deepEqual(server.errors, [])
  assert.match(log(), /C: AUTH PLAIN <redacted>/)
  assert.doesNotMatch(log(), new RegExp(b64('\0probe@mx.test\0pw')))
})

test('pop3 client: AUTH LOGIN answers both prompts in order', async (t) => {
  const { client, server } = await connect(t, async (c) => {
    c.line('+OK ready')
    await c.expect(/^AUTH LOGIN$/)
    c.line('+ VXNlcm5hbWU6')
    const user = unb64(await c.expect())
    c.line('+ UGFzc3dvcmQ6')
    const pass = unb64(await c.expect())
    c.line(user === 'probe@mx.test' && pass === 'pw' ? '+OK' : '-ERR no')
    await c.closed()
  })
  await client.greeting()
  await client.login('LOGIN', creds('pw'))
  assert.deepEqual(server.errors, [])
})

test('pop3 client: an XOAUTH2 response too long for one line waits for "+", and a refusal ends in -ERR', async (t) => {
  const token = 'ya29.' + 'a'.repeat(300)
  const { client, server } = await connect(t, async (c) => {
    c.line('+OK ready')
    // RFC 5034 4: AUTH plus initial response may not exceed 255 octets, so the response comes separately.
    await c.expect(/^AUTH XOAUTH2$/)
    c.line('+ ')
    const payload = unb64(await c.expect())
    assert.equal(payload, `user=probe@mx.test\x01auth=Bearer ${token}\x01\x01`)
    c.line('+ ' + b64('{"status":"401","schemes":"bearer"}'))
    await c.expect(/^$/)
    c.line('-ERR [AUTH] invalid token')
    await c.closed()
  })
  await client.greeting()
  await assert.rejects(
    client.login('XOAUTH2', creds(undefined, token)),
    (err: unknown) => err instanceof ProtocolError && err.reply === '-ERR [AUTH] invalid token',
  )
  assert.deepEqual(server.errors, [])
})

/** The server side of SCRAM (RFC 5802), to check our client's proof and to send a right or wrong signature. */
function scramServer(hash: 'sha1' | 'sha256', password: string, forgeSignature = false) {
  return async (c: ScriptConnection) => {
    const mechanism = hash === 'sha1' ? 'SCRAM-SHA-1' : 'SCRAM-SHA-256'
    c.line('+OK ready')
    const line = await c.expect(`AUTH ${mechanism} `)
    const clientFirst = unb64(line.split(' ')[2] ?? '')
    assert.match(clientFirst, /^n,,n=probe@mx\.test,r=/)
    const firstBare = clientFirst.slice(3)
    const nonce = (firstBare.split(',r=')[1] ?? '') + randomBytes(9).toString('base64')
    const salt = randomBytes(16)
    const serverFirst = `r=${nonce},s=${salt.toString('base64')},i=4096`
    c.line('+ ' + b64(serverFirst))
    const clientFinal = unb64(await c.expect())
    const withoutProof = clientFinal.replace(/,p=.*$/, '')
    const proof = Buffer.from(/,p=(.*)$/.exec(clientFinal)?.[1] ?? '', 'base64')
    const salted = pbkdf2Sync(password, salt, 4096, hash === 'sha1' ? 20 : 32, hash)
    const hmac = (key: Buffer, text: string) => createHmac(hash, key).update(text).digest()
    const authMessage = `${firstBare},${serverFirst},${withoutProof}`
    const storedKey = createHash(hash).update(hmac(salted, 'Client Key')).digest()
    const signature = hmac(storedKey, authMessage)
    const clientKey = Buffer.from(proof.map((b, i) => b ^ (signature[i] ?? 0)))
    if (
      !createHash(hash).update(clientKey).digest().equals(storedKey) ||
      withoutProof !== `c=biws,r=${nonce}`
    ) {
      c.line('-ERR [AUTH] Authentication failed.')
      return c.closed()
    }
    const serverSignature = forgeSignature
      ? randomBytes(signature.length)
      : hmac(hmac(salted, 'Server Key'), authMessage)
    c.line('+ ' + b64(`v=${serverSignature.toString('base64')}`))
    const answer = await c.expect()
    c.line(answer === '' ? '+OK Logged in.' : '-ERR [AUTH] Authentication cancelled.')
    return c.closed()
  }
}

test('pop3 client: SCRAM-SHA-256 proves the password and checks the server signature', async (t) => {
  const { client, server, log } = await connect(t, scramServer('sha256', 'pencil'))
  await client.greeting()
  await client.login('SCRAM-SHA-256', creds('pencil'))
  assert.deepEqual(server.errors, [])
  assert.match(log(), /S: \+OK Logged in\./)
  assert.equal((log().match(/C: <redacted>/g) ?? []).length, 2)
})

test('pop3 client: SCRAM-SHA-1 with a wrong password is refused by the server', async (t) => {
  const { client } = await connect(t, scramServer('sha1', 'pencil'))
  await client.greeting()
  await assert.rejects(client.login('SCRAM-SHA-1', creds('crayon')), ProtocolError)
})

test('pop3 client: SCRAM with a forged server signature is cancelled with "*" and rejects', async (t) => {
  const { client, server } = await connect(t, scramServer('sha256', 'pencil', true))
  await client.greeting()
  await assert.rejects(client.login('SCRAM-SHA-256', creds('pencil')), /server signature does not match/)
  assert.equal(server.received.at(-1), '*')
})

// ---------------------------------------------------------------- TLS

test('pop3 client: STLS upgrades the same connection, and the client forgets the cleartext CAPA', async (t) => {
  const { client, server } = await connect(t, async (c) => {
    c.line('+OK ready')
    await c.expect('CAPA')
    c.line('+OK\r\nSTLS\r\n.')
    await c.expect('STLS')
    c.line('+OK Begin TLS negotiation now.')
    await c.startTls(certs().good)
    await c.expect('NOOP')
    c.line('+OK over TLS')
    await c.closed()
  })
  await client.greeting()
  await client.capa()
  assert.equal(client.secure, false)
  await client.stls()
  const secure = await client.startTls('127.0.0.1', tlsConfig(`{ ca_file: ${certs().caFile} }`))
  assert.equal(secure.authorized, true)
  assert.equal(client.secure, true)
  assert.equal(client.capabilities, undefined)
  await client.noop()
  assert.deepEqual(server.errors, [])
})

test('pop3 client: data sent in the clear after the STLS reply is refused as injection', async (t) => {
  const { client } = await connect(t, async (c) => {
    c.line('+OK ready')
    await c.expect('STLS')
    c.line('+OK Begin TLS\r\n+OK injected')
    await c.closed()
  })
  await client.greeting()
  await client.stls()
  await new Promise((r) => setTimeout(r, 30))
  await assert.rejects(client.startTls('127.0.0.1', tlsConfig('{}')), /injection/)
})

// ---------------------------------------------------------------- parsers

test('pop3 reply: status lines are +OK, -ERR or a continuation, and nothing else', () => {
  assert.deepEqual(parseStatus('+OK 2 320'), { kind: 'ok', text: '2 320' })
  assert.deepEqual(parseStatus('+OK'), { kind: 'ok', text: '' })
  assert.deepEqual(parseStatus('-ERR [AUTH] no'), { kind: 'err', text: '[AUTH] no' })
  assert.deepEqual(parseStatus('+ dGVzdA=='), { kind: 'continue', text: 'dGVzdA==' })
  assert.deepEqual(parseStatus('+'), { kind: 'continue', text: '' })
  assert.equal(parseStatus('+OKAY'), undefined)
  assert.equal(parseStatus('* OK imap'), undefined)
  assert.equal(responseCode('[SYS/TEMP] try later'), 'SYS/TEMP')
  assert.equal(responseCode('no code'), undefined)
})

test('pop3 reply: CAPA lines become upper-cased keywords with arguments', () => {
  const capa = parseCapa([
    'TOP',
    'sasl plain SCRAM-SHA-256',
    'IMPLEMENTATION Dovecot 2.3',
    '',
    'LOGIN-DELAY 900',
  ])
  assert.deepEqual([...capa.keys()], ['TOP', 'SASL', 'IMPLEMENTATION', 'LOGIN-DELAY'])
  assert.deepEqual(capa.get('LOGIN-DELAY'), ['900'])
  assert.deepEqual(saslMechanisms(capa), ['PLAIN', 'SCRAM-SHA-256'])
  assert.deepEqual(saslMechanisms(parseCapa(['USER'])), [])
})

test('pop3 reply: STAT, LIST and UIDL lines parse, and malformed ones do not', () => {
  assert.deepEqual(parseStat('2 320'), { messages: 2, size: 320 })
  assert.deepEqual(parseStat('0 0 extra words'), { messages: 0, size: 0 })
  assert.equal(parseStat('maildrop ready'), undefined)
  assert.deepEqual(parseListLine('1 120'), { id: 1, size: 120 })
  assert.equal(parseListLine('x 120'), undefined)
  assert.deepEqual(parseUidlLine('2 QhdPYR:00WBw1Ph7x7'), { id: 2, uid: 'QhdPYR:00WBw1Ph7x7' })
  assert.equal(parseUidlLine('2 has space'), undefined)
  assert.equal(parseUidlLine('3 ' + 'u'.repeat(71)), undefined)
})

test('pop3 reply: the APOP timestamp is the <...@...> of the greeting, brackets included', () => {
  assert.equal(
    apopTimestamp('POP3 server ready <1896.697170952@dbc.mtview.ca.us>'),
    '<1896.697170952@dbc.mtview.ca.us>',
  )
  assert.equal(
    apopTimestamp('Dovecot ready. <3980.2.6b04abf9.LLMLA1iE1lCJQTfNn1cNrg==@vm>'),
    '<3980.2.6b04abf9.LLMLA1iE1lCJQTfNn1cNrg==@vm>',
  )
  assert.equal(apopTimestamp('Dovecot ready.'), undefined)
  assert.equal(apopTimestamp('ready <no-at-sign>'), undefined)
})
