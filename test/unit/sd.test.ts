// Service discovery (/sd): a domain's mail exchangers as http_sd target groups, per host or per address,
// only what /probe would accept, and clear answers for what cannot be listed.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { parseConfig } from '../../src/config.ts'
import { silentLogger } from '../../src/logger.ts'
import { discoverMailExchangers } from '../../src/sd.ts'
import { startExporter } from '../helpers/exporter.ts'
import { dnsServer, type DnsRecords } from '../servers/dns.ts'

const records: Record<string, DnsRecords> = {
  'mail.test': {
    MX: [
      { preference: 20, exchange: 'mx2.mail.test' },
      { preference: 10, exchange: 'mx1.mail.test' },
    ],
  },
  'mx1.mail.test': { A: ['127.0.0.2'], AAAA: ['::1'] },
  'mx2.mail.test': { A: ['127.0.0.3'] },
  'null.test': { MX: [{ preference: 0, exchange: '.' }] },
}

function moduleOf(dns: string, extra = '') {
  const config = parseConfig(
    `modules:\n  m:\n    prober: smtp\n${extra}    smtp: { dns_server: "${dns}" }\n  p:\n    prober: imap\n    allowed_targets: [mail.test]\n    imap: { auth: { username: u, password: p } }\n`,
    'c.yml',
  )
  return config.modules
}

test('sd: one group per mail exchanger, by preference, with the labels Prometheus relabels from', async (t) => {
  const dns = await dnsServer(t, records)
  const modules = moduleOf(dns.address)
  const r = await discoverMailExchangers('m', modules['m']!, 'mx:mail.test:2525', silentLogger)
  assert.equal(r.status, 200, r.body)
  assert.equal(r.contentType, 'application/json; charset=utf-8')
  assert.deepEqual(JSON.parse(r.body), [
    {
      targets: ['mx1.mail.test:2525'],
      labels: { __param_module: 'm', domain: 'mail.test', mx: 'mx1.mail.test', mx_preference: '10' },
    },
    {
      targets: ['mx2.mail.test:2525'],
      labels: { __param_module: 'm', domain: 'mail.test', mx: 'mx2.mail.test', mx_preference: '20' },
    },
  ])
})

test('sd: with mx.addresses all, every address, bracketed for IPv6, with __param_hostname for the certificate', async (t) => {
  const dns = await dnsServer(t, records)
  const modules = moduleOf(dns.address, '    mx: { addresses: all }\n')
  const r = await discoverMailExchangers('m', modules['m']!, 'mx:mail.test', silentLogger)
  assert.equal(r.status, 200, r.body)
  const groups = JSON.parse(r.body) as { targets: string[]; labels: Record<string, string> }[]
  assert.deepEqual(
    groups.map((g) => [g.targets[0], g.labels['ip'], g.labels['__param_hostname']]),
    [
      ['127.0.0.2:25', '127.0.0.2', 'mx1.mail.test'],
      ['[::1]:25', '::1', 'mx1.mail.test'],
      ['127.0.0.3:25', '127.0.0.3', 'mx2.mail.test'],
    ],
  )
})

test('sd: with allowed_targets only what /probe accepts is listed', async (t) => {
  const dns = await dnsServer(t, records)
  const byName = moduleOf(dns.address, '    allowed_targets: [mail.test, mx2.mail.test]\n')
  const r = await discoverMailExchangers('m', byName['m']!, 'mx:mail.test', silentLogger)
  assert.deepEqual(
    (JSON.parse(r.body) as { targets: string[] }[]).map((g) => g.targets[0]),
    ['mx2.mail.test:25'],
  )
  const byAddress = moduleOf(
    dns.address,
    '    allowed_targets: [mail.test, 127.0.0.0/8]\n    mx: { addresses: all }\n',
  )
  const a = await discoverMailExchangers('m', byAddress['m']!, 'mx:mail.test', silentLogger)
  assert.deepEqual(
    (JSON.parse(a.body) as { targets: string[] }[]).map((g) => g.targets[0]),
    ['127.0.0.2:25', '127.0.0.3:25'],
  )
  const elsewhere = await discoverMailExchangers('m', byName['m']!, 'mx:other.test', silentLogger)
  assert.equal(elsewhere.status, 403)
})

test('sd: a null MX lists nothing; a failed lookup is a 502; a host target or a non-smtp module is a 400', async (t) => {
  const dns = await dnsServer(t, records)
  const modules = moduleOf(dns.address)
  const none = await discoverMailExchangers('m', modules['m']!, 'mx:null.test', silentLogger)
  assert.equal(none.status, 200)
  assert.deepEqual(JSON.parse(none.body), [])
  const missing = await discoverMailExchangers('m', modules['m']!, 'mx:nowhere.test', silentLogger)
  assert.equal(missing.status, 502)
  assert.match(missing.body, /cannot look up the MX records of nowhere\.test: ENOTFOUND/)
  const host = await discoverMailExchangers('m', modules['m']!, 'mx1.mail.test', silentLogger)
  assert.equal(host.status, 400)
  assert.match(host.body, /service discovery lists mail exchangers: give target=mx:DOMAIN/)
  const imap = await discoverMailExchangers('p', modules['p']!, 'mx:mail.test', silentLogger)
  assert.equal(imap.status, 400)
  assert.match(imap.body, /mx: targets are for smtp modules/)
})

test('sd: GET /sd answers over HTTP as Prometheus http_sd_configs reads it; a bad request is a 400', async (t) => {
  const dns = await dnsServer(t, records)
  const exporter = await startExporter(
    t,
    `modules:\n  m:\n    prober: smtp\n    smtp: { dns_server: "${dns.address}" }\n`,
  )
  const r = await exporter.get('/sd?module=m&target=mx:mail.test')
  assert.equal(r.status, 200)
  assert.equal(r.headers.get('content-type'), 'application/json; charset=utf-8')
  const groups = (await r.json()) as { targets: string[] }[]
  assert.deepEqual(
    groups.map((g) => g.targets[0]),
    ['mx1.mail.test:25', 'mx2.mail.test:25'],
  )
  const unknown = await exporter.get('/sd?module=nope&target=mx:mail.test')
  assert.equal(unknown.status, 400)
  assert.match(await unknown.text(), /unknown module "nope" \(known: m\)/)
  const twice = await exporter.get('/sd?module=m&target=mx:a.test&target=mx:b.test')
  assert.equal(twice.status, 400)
})
