// Addresses: IPv6 targets ([::1]:port) end to end, and source_ip_address binding the probe's socket.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { parseConfig } from '../../src/config.ts'
import { probe } from '../helpers/probe.ts'
import { scriptedServer } from '../servers/scripted.ts'
import { dnsServer } from '../servers/dns.ts'
import { smtpScript } from '../servers/smtp.ts'

const banner = (extra = '') => `
prober: smtp
timeout: 3s
smtp:
  tls: none
  ${extra}`

test('addressing: an IPv6 target in brackets is probed on ::1, and the metrics say IPv6', async (t) => {
  const server = await scriptedServer(t, smtpScript({ starttls: false }), { host: '::1' })
  const r = await probe(banner(), `[::1]:${server.port}`)
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_ip_protocol'), 6)
  assert.deepEqual(server.peers, ['::1'])
})

test('addressing: source_ip_address is where the connection comes from; a family mismatch fails in connect', async (t) => {
  const server = await scriptedServer(t, smtpScript({ starttls: false }))
  const r = await probe(banner('source_ip_address: 127.0.0.2'), `127.0.0.1:${server.port}`)
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.deepEqual(server.peers, ['127.0.0.2'])

  const v6 = await scriptedServer(t, smtpScript({ starttls: false }), { host: '::1' })
  const mismatch = await probe(banner('source_ip_address: 127.0.0.2'), `[::1]:${v6.port}`)
  assert.equal(mismatch.failedPhase, 'connect')
  assert.match(mismatch.debug, /source_ip_address 127\.0\.0\.2 is IPv4, but the target is IPv6 ::1/)
  assert.equal(v6.connections, 0)
})

test('addressing: source_ip_address must be an address', () => {
  assert.throws(
    () =>
      parseConfig(
        `modules:\n  m:\n${banner('source_ip_address: mail.example.org').replace(/^/gm, '    ')}\n`,
        'c.yml',
      ),
    /c\.yml:\d+:\d+: modules\.m\.smtp\.source_ip_address: source_ip_address must be an IPv4 or IPv6 address/,
  )
})

test('addressing: dns_server resolves the target there (A, then AAAA with fallback), and the debug log says so', async (t) => {
  const dns = await dnsServer(t, { 'mail.test': { A: ['127.0.0.1'] }, 'six.test': { AAAA: ['::1'] } })
  const server = await scriptedServer(t, smtpScript({ starttls: false }))
  const r = await probe(banner(`dns_server: ${dns.address}`), `mail.test:${server.port}`)
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.match(
    r.debug,
    new RegExp(`resolved target" host=mail\\.test address=127\\.0\\.0\\.1 server=${dns.address}`),
  )
  assert.deepEqual(dns.questions, ['mail.test A'])

  const v6 = await scriptedServer(t, smtpScript({ starttls: false }), { host: '::1' })
  const six = await probe(banner(`dns_server: ${dns.address}`), `six.test:${v6.port}`)
  assert.equal(six.value('probe_success'), 1, six.debug)
  assert.equal(six.value('probe_ip_protocol'), 6)
  assert.deepEqual(dns.questions.slice(1), ['six.test A', 'six.test AAAA'])

  const unknown = await probe(banner(`dns_server: ${dns.address}`), `nowhere.test:${server.port}`)
  assert.equal(unknown.failedPhase, 'resolve')
  assert.match(unknown.debug, /cannot resolve nowhere\.test: ENOTFOUND/)
  assert.equal(server.connections, 1, 'the system resolver was not asked instead')
})

test('addressing: dns_server must be an IP address with an optional port', () => {
  assert.throws(
    () =>
      parseConfig(
        `modules:\n  m:\n${banner('dns_server: ns.example.org').replace(/^/gm, '    ')}\n`,
        'c.yml',
      ),
    /modules\.m\.smtp\.dns_server: dns_server must be an IP address with an optional port/,
  )
})
