// The mail stack's DNS server and MX hosts (scripts/mailstack.sh), checked against what test/helpers/stack.ts says.
import assert from 'node:assert/strict'
import { Resolver } from 'node:dns/promises'
import { readFileSync } from 'node:fs'
import { connect as netConnect, isIPv4, isIPv6, type Socket } from 'node:net'
import { test } from 'node:test'
import { checkServerIdentity, connect as tlsConnect, type TLSSocket } from 'node:tls'
import { mailStack } from '../helpers/stack.ts'

const stack = mailStack()
const ca = readFileSync(stack.ca)

function resolver(): Resolver {
  const dns = new Resolver({ timeout: 2000, tries: 1 })
  dns.setServers([stack.dns])
  return dns
}

/** One query over TCP, by hand: node:dns (c-ares) only falls back to TCP for truncated answers. */
async function queryTcp(name: string, type: number): Promise<{ rcode: number; answers: number }> {
  const labels = name
    .split('.')
    .map((label) => Buffer.concat([Buffer.from([label.length]), Buffer.from(label)]))
  // id 0x4d50, no recursion desired, one question of class IN
  const header = Buffer.from([0x4d, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
  const message = Buffer.concat([header, ...labels, Buffer.from([0, type >> 8, type & 0xff, 0, 1])])
  const length = Buffer.alloc(2)
  length.writeUInt16BE(message.length)
  const socket = netConnect({ host: '127.0.0.1', port: stack.ports.dns })
  socket.setTimeout(5000, () => socket.destroy(new Error('DNS over TCP: no answer in 5 s')))
  socket.write(Buffer.concat([length, message]))
  let response = Buffer.alloc(0)
  for await (const chunk of socket) {
    response = Buffer.concat([response, chunk as Buffer])
    if (response.length >= 2 && response.length >= 2 + response.readUInt16BE(0)) break
  }
  socket.destroy()
  assert.ok(response.length >= 14, `short DNS response: ${response.toString('hex')}`)
  assert.equal(response.readUInt16BE(2), 0x4d50, 'response id')
  return { rcode: response[5]! & 0x0f, answers: response.readUInt16BE(8) }
}

/** SMTP over a socket, one reply at a time (a multi-line reply is one reply, its lines without CRLF). */
interface Dialogue {
  reply(): Promise<string[]>
  /** Sends `line`; the reply must have `code`. */
  command(line: string, code: number): Promise<string[]>
  /** Stops reading, so that the socket can be handed to TLS. */
  release(): void
}

function dialogue(socket: Socket): Dialogue {
  let buffer = ''
  let lines: string[] = []
  const replies: string[][] = []
  let failure: Error | undefined
  let waiter: ((next: string[] | Error) => void) | undefined
  const wake = () => {
    const next = replies.shift() ?? failure
    if (!waiter || !next) return
    const w = waiter
    waiter = undefined
    w(next)
  }
  const onData = (chunk: Buffer) => {
    buffer += chunk.toString('latin1')
    for (let eol = buffer.indexOf('\r\n'); eol >= 0; eol = buffer.indexOf('\r\n')) {
      const line = buffer.slice(0, eol)
      buffer = buffer.slice(eol + 2)
      lines.push(line)
      if (line[3] !== '-') {
        replies.push(lines)
        lines = []
      }
    }
    if (waiter) wake()
  }
  const onError = (error: Error) => {
    failure ??= error
    if (waiter) wake()
  }
  const onClose = () => onError(new Error('connection closed'))
  socket.on('data', onData).on('error', onError).on('close', onClose)
  const reply = () =>
    new Promise<string[]>((resolve, reject) => {
      waiter = (next) => (next instanceof Error ? reject(next) : resolve(next))
      wake()
    })
  return {
    reply,
    async command(line, code) {
      socket.write(`${line}\r\n`)
      const answer = await reply()
      assert.equal(answer.at(-1)?.slice(0, 4), `${code} `, `${line} -> ${answer.join(' | ')}`)
      return answer
    },
    release() {
      socket.off('data', onData).off('error', onError).off('close', onClose)
    },
  }
}

/** A connection to the SMTP service at address:ports.smtp, its banner read. */
async function openSmtp(address: string): Promise<{ socket: Socket; smtp: Dialogue; banner: string }> {
  const socket = netConnect({ host: address, port: stack.ports.smtp })
  socket.setTimeout(5000, () => socket.destroy(new Error(`${address}:${stack.ports.smtp}: no reply in 5 s`)))
  const smtp = dialogue(socket)
  const banner = (await smtp.reply()).join('\n')
  return { socket, smtp, banner }
}

/** EHLO, STARTTLS and the TLS handshake on a fresh connection to `address`. */
async function starttls(
  address: string,
  servername: string,
  rejectUnauthorized: boolean,
): Promise<TLSSocket> {
  const { socket, smtp } = await openSmtp(address)
  try {
    await smtp.command('EHLO probe.example.org', 250)
    await smtp.command('STARTTLS', 220)
    smtp.release()
    return await new Promise<TLSSocket>((resolve, reject) => {
      const tls = tlsConnect({ socket, servername, ca, rejectUnauthorized })
      tls.once('secureConnect', () => resolve(tls)).once('error', reject)
    })
  } catch (error) {
    socket.destroy()
    throw error
  }
}

// ---------------------------------------------------------------- DNS

test('mailstack dns: the MX domain has one MX record per MX host, with its preference', async () => {
  const records = await resolver().resolveMx(stack.mx.domain)
  assert.deepEqual(
    records.sort((a, b) => a.priority - b.priority),
    stack.mx.hosts.map((host) => ({ exchange: host.name, priority: host.preference })),
  )
})

for (const host of stack.mx.hosts) {
  test(`mailstack dns: ${host.name} has exactly the addresses ${host.addresses.join(', ')}`, async () => {
    const dns = resolver()
    const v4 = host.addresses.filter((address) => isIPv4(address))
    const v6 = host.addresses.filter((address) => isIPv6(address))
    assert.deepEqual([...v4, ...v6], host.addresses, 'A records first, then AAAA')
    if (v4.length > 0) assert.deepEqual((await dns.resolve4(host.name)).sort(), v4.sort())
    else await assert.rejects(dns.resolve4(host.name), { code: 'ENODATA' })
    if (v6.length > 0) assert.deepEqual((await dns.resolve6(host.name)).sort(), v6.sort())
    else await assert.rejects(dns.resolve6(host.name), { code: 'ENODATA' })
  })
}

test('mailstack dns: the fallback domain has no MX record and one A record (implicit MX)', async () => {
  const dns = resolver()
  await assert.rejects(dns.resolveMx(stack.mx.fallbackDomain), { code: 'ENODATA' })
  assert.deepEqual(await dns.resolve4(stack.mx.fallbackDomain), [stack.mx.fallbackAddress])
  await assert.rejects(dns.resolve6(stack.mx.fallbackDomain), { code: 'ENODATA' })
})

test('mailstack dns: the null MX domain has only MX 0 "." (c-ares gives the root as "")', async () => {
  const dns = resolver()
  assert.deepEqual(await dns.resolveMx(stack.mx.nullMxDomain), [{ exchange: '', priority: 0 }])
  await assert.rejects(dns.resolve4(stack.mx.nullMxDomain), { code: 'ENODATA' })
  await assert.rejects(dns.resolve6(stack.mx.nullMxDomain), { code: 'ENODATA' })
})

test('mailstack dns: names without records are NXDOMAIN, in .test and outside it (nothing is forwarded)', async () => {
  const dns = resolver()
  await assert.rejects(dns.resolveMx('nope.test'), { code: 'ENOTFOUND' })
  await assert.rejects(dns.resolve4('mx3.mail.test'), { code: 'ENOTFOUND' })
  await assert.rejects(dns.resolveMx('example.org'), { code: 'ENOTFOUND' })
})

test('mailstack dns: the same answers over TCP', async () => {
  const MX = 15
  const A = 1
  assert.deepEqual(await queryTcp(stack.mx.domain, MX), { rcode: 0, answers: stack.mx.hosts.length })
  assert.deepEqual(await queryTcp(stack.mx.fallbackDomain, MX), { rcode: 0, answers: 0 })
  assert.deepEqual(await queryTcp('nope.test', A), { rcode: 3, answers: 0 })
})

// ---------------------------------------------------------------- MX hosts

test('mailstack mx: 127.0.0.1 still greets as mail.test, not as an MX host', async () => {
  const { socket, smtp, banner } = await openSmtp('127.0.0.1')
  try {
    assert.equal(banner, '220 mail.test ESMTP mailprobe test')
    await smtp.command('QUIT', 221)
  } finally {
    socket.destroy()
  }
})

for (const host of stack.mx.hosts) {
  for (const address of host.addresses) {
    const where = `${isIPv6(address) ? `[${address}]` : address}:${stack.ports.smtp}`

    test(`mailstack mx: ${where} is ${host.name}: banner, EHLO with STARTTLS and no AUTH, mail for mail.test accepted`, async () => {
      const { socket, smtp, banner } = await openSmtp(address)
      try {
        assert.equal(banner, `220 ${host.name} ESMTP mailprobe test`)
        const ehlo = await smtp.command('EHLO probe.example.org', 250)
        assert.equal(ehlo[0], `250-${host.name}`)
        assert.ok(
          ehlo.some((line) => /^250[- ]STARTTLS$/.test(line)),
          ehlo.join(' | '),
        )
        assert.ok(!ehlo.some((line) => /^250[- ]AUTH\b/.test(line)), ehlo.join(' | '))
        await smtp.command('MAIL FROM:<monitor@example.org>', 250)
        await smtp.command(`RCPT TO:<${stack.users.alice[0]}>`, 250)
        await smtp.command('RSET', 250)
        await smtp.command('QUIT', 221)
      } finally {
        socket.destroy()
      }
    })

    if (host.certValid) {
      test(`mailstack mx: ${where} after STARTTLS has a certificate that verifies against the CA for ${host.name} only`, async () => {
        const tls = await starttls(address, host.name, true)
        try {
          assert.equal(tls.authorized, true)
          const cert = tls.getPeerCertificate()
          assert.equal(cert.subjectaltname, `DNS:${host.name}`)
          assert.ok(checkServerIdentity(stack.mx.domain, cert) instanceof Error, 'not valid for mail.test')
          const smtp = dialogue(tls)
          const ehlo = await smtp.command('EHLO probe.example.org', 250)
          assert.equal(ehlo[0], `250-${host.name}`)
          await smtp.command('QUIT', 221)
        } finally {
          tls.destroy()
        }
      })
    } else {
      test(`mailstack mx: ${where} after STARTTLS has an expired certificate (CERT_HAS_EXPIRED), otherwise right for ${host.name}`, async () => {
        await assert.rejects(starttls(address, host.name, true), { code: 'CERT_HAS_EXPIRED' })
        const tls = await starttls(address, host.name, false)
        try {
          // typed as Error, but Node sets the OpenSSL code string
          assert.equal(String(tls.authorizationError), 'CERT_HAS_EXPIRED')
          const cert = tls.getPeerCertificate()
          assert.equal(cert.subjectaltname, `DNS:${host.name}`)
          assert.equal(checkServerIdentity(host.name, cert), undefined)
          assert.equal(cert.issuer.CN, 'mailprobe throwaway CA')
          assert.equal(new Date(cert.valid_to).toISOString(), '2020-01-02T00:00:00.000Z')
        } finally {
          tls.destroy()
        }
      })
    }
  }
}
