// mx: targets against an in-process DNS server and scripted SMTP servers on 127.0.0.2, 127.0.0.3 and ::1:
// every mail exchanger (and address) probed, labelled, judged by mx.success; null and implicit MX;
// certificates checked against the MX name; the hostname parameter; refusals before any connection.
import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { parseConfig } from '../../src/config.ts'
import { probe } from '../helpers/probe.ts'
import { certs, leafFor } from '../servers/certs.ts'
import { dnsServer, type DnsRecords } from '../servers/dns.ts'
import { scriptedServer, type ScriptedServer } from '../servers/scripted.ts'
import { smtpScript, type SmtpFaults } from '../servers/smtp.ts'

const module = (dns: string, extra = '', smtp = '') => `
prober: smtp
timeout: 5s
${extra}
smtp:
  tls: starttls
  dns_server: ${dns}
  tls_config: { ca_file: ${certs().caFile} }
  ${smtp}`

/** SMTP servers on one port, one per address (the port of the first, free on the others too). */
async function servers(t: TestContext, hosts: { host: string; faults?: SmtpFaults }[]) {
  const started: ScriptedServer[] = []
  for (const { host, faults } of hosts) {
    const port = started[0]?.port
    started.push(await scriptedServer(t, smtpScript(faults), { host, ...(port ? { port } : {}) }))
  }
  return { port: started[0]?.port ?? 0, servers: started }
}

/** mx1 on 127.0.0.2 and mx2 on 127.0.0.3, each with a certificate for its own name only. */
const bothHosts = (t: TestContext) =>
  servers(t, [
    { host: '127.0.0.2', faults: { cert: leafFor('mx1.mail.test') } },
    { host: '127.0.0.3', faults: { cert: leafFor('mx2.mail.test') } },
  ])

const twoHosts = (mx2Address = '127.0.0.3'): Record<string, DnsRecords> => ({
  'mail.test': {
    MX: [
      { preference: 20, exchange: 'mx2.mail.test' },
      { preference: 10, exchange: 'mx1.mail.test' },
    ],
  },
  'mx1.mail.test': { A: ['127.0.0.2'], AAAA: ['::1'] },
  'mx2.mail.test': { A: [mx2Address] },
})

test('mx: every mail exchanger is probed on its address, by preference, with mx and ip labels and the MX name for TLS', async (t) => {
  const dns = await dnsServer(t, twoHosts())
  const {
    port,
    servers: [mx1, mx2],
  } = await bothHosts(t)
  const r = await probe(module(dns.address), `mx:mail.test:${port}`)
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_mx_hosts'), 2)
  assert.equal(r.value('probe_mx_addresses'), 2)
  assert.equal(r.value('probe_mx_addresses_succeeded'), 2)
  assert.equal(r.value('probe_mx_preference', { mx: 'mx1.mail.test' }), 10)
  assert.equal(r.value('probe_mx_preference', { mx: 'mx2.mail.test' }), 20)
  assert.equal(r.value('probe_mx_null'), 0)
  assert.equal(r.value('probe_mx_implicit'), 0)
  for (const [mx, ip] of [
    ['mx1.mail.test', '127.0.0.2'],
    ['mx2.mail.test', '127.0.0.3'],
  ] as const) {
    assert.equal(r.value('probe_mx_host_success', { mx, ip }), 1)
    assert.ok((r.value('probe_mx_host_duration_seconds', { mx, ip }) ?? 0) > 0)
    // The host's own metrics, labelled: its phases and its certificate (verified against the MX name).
    assert.ok((r.value('probe_smtp_duration_seconds', { phase: 'tls', mx, ip }) ?? 0) > 0, r.debug)
    assert.equal(r.value('probe_tls_version_info', { version: 'TLS 1.3', mx, ip }), 1, r.debug)
    assert.ok((r.value('probe_ssl_earliest_cert_expiry', { mx, ip }) ?? 0) > Date.now() / 1000)
  }
  assert.ok((r.value('probe_mx_duration_seconds', { phase: 'lookup_mx' }) ?? 0) > 0)
  assert.ok((r.value('probe_mx_duration_seconds', { phase: 'probe_hosts' }) ?? 0) > 0)
  // Unlabelled series are the probe's own: one probe_success.
  assert.equal(r.samples.filter((s) => s.name === 'probe_success').length, 1)
  assert.deepEqual([mx1?.connections, mx2?.connections], [1, 1])
  // The waterfall has the MX part's own steps, then each host's, named by host.
  assert.ok(r.steps.some((s) => s.host === undefined && s.phase === 'lookup_mx'))
  for (const host of ['mx1.mail.test [127.0.0.2]', 'mx2.mail.test [127.0.0.3]'])
    assert.ok(
      r.steps.some((s) => s.host === host && s.phase === 'tls'),
      host,
    )
  assert.match(
    r.debug,
    /msg="mail exchangers" domain=mail\.test server=127\.0\.0\.1:\d+ hosts="10 mx1\.mail\.test, 20 mx2\.mail\.test"/,
  )
  assert.match(r.debug, /mx=mx1\.mail\.test ip=127\.0\.0\.2/)
  assert.ok(dns.questions.includes('mail.test MX'), dns.questions.join(', '))
})

test('mx: an expired certificate fails that host in phase tls; mx.success all fails the probe, any passes it', async (t) => {
  const dns = await dnsServer(t, twoHosts())
  const { port } = await servers(t, [
    { host: '127.0.0.2', faults: { cert: leafFor('mx1.mail.test') } },
    { host: '127.0.0.3', faults: { cert: certs().expired } },
  ])
  const all = await probe(module(dns.address), `mx:mail.test:${port}`)
  assert.equal(all.value('probe_success'), 0)
  assert.equal(all.failedPhase, 'tls')
  assert.equal(all.value('probe_mx_host_success', { mx: 'mx1.mail.test', ip: '127.0.0.2' }), 1)
  assert.equal(all.value('probe_mx_host_success', { mx: 'mx2.mail.test', ip: '127.0.0.3' }), 0)
  const failed = { mx: 'mx2.mail.test', ip: '127.0.0.3', phase: 'tls' }
  assert.equal(all.value('probe_mx_host_failed_phase_info', failed), 1)
  assert.equal(all.value('probe_mx_addresses_succeeded'), 1)
  assert.match(
    all.debug,
    /mx2\.mail\.test \[127\.0\.0\.3\]: certificate verification failed: CERT_HAS_EXPIRED|certificate has expired/i,
  )
  assert.match(all.debug, /1 of 2 mail exchanger addresses failed \(mx\.success: all\)/)

  const any = await probe(module(dns.address, 'mx: { success: any }'), `mx:mail.test:${port}`)
  assert.equal(any.value('probe_success'), 1, any.debug)
  assert.equal(any.value('probe_mx_host_success', { mx: 'mx2.mail.test', ip: '127.0.0.3' }), 0)
})

test('mx: addresses all probes each A and AAAA of a host; preferred probes one', async (t) => {
  const dns = await dnsServer(t, twoHosts())
  const cert = leafFor('mx1.mail.test')
  const {
    port,
    servers: [v4, v6],
  } = await servers(t, [
    { host: '127.0.0.2', faults: { cert } },
    { host: '::1', faults: { cert } },
    { host: '127.0.0.3', faults: { cert: leafFor('mx2.mail.test') } },
  ])
  const every = await probe(module(dns.address, 'mx: { addresses: all }'), `mx:mail.test:${port}`)
  assert.equal(every.value('probe_success'), 1, every.debug)
  assert.equal(every.value('probe_mx_addresses'), 3)
  assert.equal(every.value('probe_mx_host_success', { mx: 'mx1.mail.test', ip: '::1' }), 1)
  assert.equal(every.value('probe_ip_protocol', { mx: 'mx1.mail.test', ip: '::1' }), 6)
  assert.deepEqual([v4?.connections, v6?.connections], [1, 1])

  const one = await probe(module(dns.address), `mx:mail.test:${port}`)
  assert.equal(one.value('probe_mx_addresses'), 2)
  assert.equal(one.value('probe_mx_host_success', { mx: 'mx1.mail.test', ip: '127.0.0.2' }), 1)
  assert.equal(v6?.connections, 1, 'preferred (ip4) probes the A address only')
})

test('mx: a host that does not resolve fails in phase resolve; the others are still probed', async (t) => {
  const dns = await dnsServer(t, {
    'mail.test': {
      MX: [
        { preference: 10, exchange: 'mx1.mail.test' },
        { preference: 20, exchange: 'gone.mail.test' },
      ],
    },
    'mx1.mail.test': { A: ['127.0.0.2'] },
  })
  const { port } = await servers(t, [{ host: '127.0.0.2', faults: { cert: leafFor('mx1.mail.test') } }])
  const r = await probe(module(dns.address), `mx:mail.test:${port}`)
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'resolve')
  assert.equal(r.value('probe_mx_host_success', { mx: 'mx1.mail.test', ip: '127.0.0.2' }), 1)
  assert.equal(
    r.value('probe_mx_host_failed_phase_info', { mx: 'gone.mail.test', ip: '', phase: 'resolve' }),
    1,
  )
  assert.match(r.debug, /cannot resolve gone\.mail\.test: ENOTFOUND/)
})

test('mx: a null MX fails in lookup_mx and says so; no MX means the domain itself (implicit MX); NXDOMAIN fails', async (t) => {
  const dns = await dnsServer(t, {
    'null.test': { MX: [{ preference: 0, exchange: '.' }] },
    'plain.test': { A: ['127.0.0.2'] },
  })
  const {
    port,
    servers: [server],
  } = await servers(t, [{ host: '127.0.0.2', faults: { cert: leafFor('plain.test') } }])

  const none = await probe(module(dns.address), `mx:null.test:${port}`)
  assert.equal(none.value('probe_success'), 0)
  assert.equal(none.failedPhase, 'lookup_mx')
  assert.equal(none.value('probe_mx_null'), 1)
  assert.match(none.debug, /null\.test has a null MX \(RFC 7505\): it accepts no mail/)

  const implicit = await probe(module(dns.address), `mx:plain.test:${port}`)
  assert.equal(implicit.value('probe_success'), 1, implicit.debug)
  assert.equal(implicit.value('probe_mx_implicit'), 1)
  assert.equal(implicit.value('probe_mx_host_success', { mx: 'plain.test', ip: '127.0.0.2' }), 1)
  assert.equal(server?.connections, 1)

  const missing = await probe(module(dns.address), `mx:nowhere.test:${port}`)
  assert.equal(missing.failedPhase, 'lookup_mx')
  assert.match(missing.debug, /cannot look up the MX records of nowhere\.test: ENOTFOUND/)
})

test('mx: max_hosts and max_parallel bound what DNS answers make the probe do', async (t) => {
  const many = Array.from({ length: 6 }, (_, i) => ({ preference: i, exchange: `mx${i}.mail.test` }))
  const records: Record<string, DnsRecords> = { 'mail.test': { MX: many } }
  for (const { exchange } of many) records[exchange] = { A: ['127.0.0.2'] }
  const dns = await dnsServer(t, records)
  const {
    port,
    servers: [server],
  } = await servers(t, [{ host: '127.0.0.2', faults: { starttls: false } }])
  const r = await probe(
    module(dns.address, 'mx: { max_hosts: 3, max_parallel: 1 }', '').replace('tls: starttls', 'tls: none'),
    `mx:mail.test:${port}`,
  )
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_mx_hosts'), 3)
  assert.equal(server?.connections, 3)
  assert.equal(r.value('probe_mx_preference', { mx: 'mx3.mail.test' }), undefined)
  assert.match(r.debug, /left_out=3/)
})

test('mx: allowed_targets admits the domain, and each host by its name or address', async (t) => {
  const dns = await dnsServer(t, twoHosts())
  const {
    port,
    servers: [mx1, mx2],
  } = await bothHosts(t)
  const r = await probe(
    module(dns.address, 'allowed_targets: [mail.test, mx1.mail.test]'),
    `mx:mail.test:${port}`,
  )
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'target')
  assert.equal(
    r.value('probe_mx_host_failed_phase_info', { mx: 'mx2.mail.test', ip: '127.0.0.3', phase: 'target' }),
    1,
  )
  assert.match(r.debug, /mx2\.mail\.test \(127\.0\.0\.3:\d+\) is not in allowed_targets/)
  assert.deepEqual([mx1?.connections, mx2?.connections], [1, 0])

  await assert.rejects(
    probe(module(dns.address, 'allowed_targets: [example.org]'), `mx:mail.test:${port}`),
    /403: target mx:mail\.test:\d+ is not in allowed_targets/,
  )
})

test('mx: refused before any connection: mx: for a prober that is not smtp, an address after mx:, hostname with mx:', async (t) => {
  const dns = await dnsServer(t, twoHosts())
  await assert.rejects(
    probe(
      `prober: pop3\nallowed_targets: [mail.test]\npop3: { auth: { username: u, password: p } }`,
      'mx:mail.test',
    ),
    /400: invalid target: mx: targets are for smtp modules, and module m is pop3/,
  )
  await assert.rejects(probe(module(dns.address), 'mx:127.0.0.1'), /mx: takes a domain, not an address/)
  await assert.rejects(
    probe(module(dns.address), 'mx:mail.test', { hostname: 'mx1.mail.test' }),
    /400: hostname cannot be given with an mx: target/,
  )
  assert.equal(dns.questions.length, 0)
  const imap = '    allowed_targets: [mail.test]\n    imap: { auth: { username: u, password: p } }\n'
  assert.throws(
    () => parseConfig(`modules:\n  m:\n    prober: imap\n    mx: { success: any }\n${imap}`, 'c.yml'),
    /c\.yml:4:\d+: modules\.m\.mx: mx applies to mx: targets, which are for smtp modules, not imap/,
  )
  assert.throws(
    () => parseConfig(`modules:\n  m:\n    prober: imap\n    target: mx:mail.test\n${imap}`, 'c.yml'),
    /modules\.m\.target: mx: targets are for probers that speak to mail exchangers \(smtp\), not imap/,
  )
})

test('mx: a module with a fixed mx: target probes it without a target parameter and refuses others', async (t) => {
  const dns = await dnsServer(t, twoHosts())
  const { port } = await bothHosts(t)
  const fixed = module(dns.address, `target: mx:mail.test:${port}`)
  const r = await probe(fixed, undefined)
  assert.equal(r.value('probe_success'), 1, r.debug)
  await assert.rejects(
    probe(fixed, `mx:other.test:${port}`),
    /403: module m only probes its configured target/,
  )
})

test('hostname: the parameter is the name TLS checks instead of the target host; it must be a host name', async (t) => {
  const server = await scriptedServer(t, smtpScript({ cert: leafFor('mx1.mail.test') }))
  const smtp = `prober: smtp\ntimeout: 3s\nsmtp:\n  tls: starttls\n  tls_config: { ca_file: ${certs().caFile} }`
  const named = await probe(smtp, `127.0.0.1:${server.port}`, { hostname: 'MX1.mail.test' })
  assert.equal(named.value('probe_success'), 1, named.debug)
  const bare = await probe(smtp, `127.0.0.1:${server.port}`)
  assert.equal(bare.failedPhase, 'tls')
  assert.match(bare.debug, /ERR_TLS_CERT_ALTNAME_INVALID|does not match|altnames/i)
  await assert.rejects(
    probe(smtp, `127.0.0.1:${server.port}`, { hostname: '127.0.0.1' }),
    /400: invalid hostname: "127\.0\.0\.1" is not a host name: an address is not a server name/,
  )
  await assert.rejects(
    probe(smtp, `127.0.0.1:${server.port}`, { hostname: 'bad name' }),
    /400: invalid hostname: "bad name" is not a host name/,
  )
})
