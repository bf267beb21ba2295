// mx: targets against the project's real stack: dnsmasq serves mail.test's MX records, Postfix listens
// as mx1.mail.test on 127.0.0.2 and ::1 (a good certificate) and as mx2.mail.test on 127.0.0.3 (an
// expired one). Every host and address is probed and labelled; /sd lists them; the one-shot command
// prints the waterfall and exits 0, 1 or 2.
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { parseConfig } from '../../src/config.ts'
import { silentLogger } from '../../src/logger.ts'
import { discoverMailExchangers } from '../../src/sd.ts'
import { runProbeCommand } from '../helpers/oneshot.ts'
import { probe } from '../helpers/probe.ts'
import { mailStack } from '../helpers/stack.ts'

const stack = mailStack()
const port = stack.ports.smtp
const [mx1, mx2] = stack.mx.hosts
if (!mx1 || !mx2) throw new Error('the stack has two MX hosts')

const smtp = (mx: string, tls = 'starttls') => `
prober: smtp
timeout: 8s
${mx}
smtp:
  tls: ${tls}
  dns_server: "${stack.dns}"
  tls_config: { ca_file: ${stack.ca} }`

test('mx (dnsmasq + Postfix): every address of every MX host is probed; the expired one fails in tls with its labels', async () => {
  const r = await probe(smtp('mx: { addresses: all }'), `mx:${stack.mx.domain}:${port}`)
  assert.equal(r.value('probe_success'), 0, r.debug)
  assert.equal(r.failedPhase, 'tls')
  assert.equal(r.value('probe_mx_hosts'), 2)
  assert.equal(r.value('probe_mx_addresses'), 3)
  assert.equal(r.value('probe_mx_addresses_succeeded'), 2)
  assert.equal(r.value('probe_mx_preference', { mx: mx1.name }), mx1.preference)
  assert.equal(r.value('probe_mx_preference', { mx: mx2.name }), mx2.preference)
  for (const ip of mx1.addresses) {
    const labels: Record<string, string> = { mx: mx1.name, ip }
    assert.equal(r.value('probe_mx_host_success', labels), 1, `${mx1.name} ${ip}\n${r.debug}`)
    assert.ok((r.value('probe_smtp_duration_seconds', { ...labels, phase: 'quit' }) ?? 0) > 0)
    assert.ok((r.value('probe_ssl_last_chain_expiry_timestamp_seconds', labels) ?? 0) > Date.now() / 1000)
  }
  assert.equal(r.value('probe_ip_protocol', { mx: mx1.name, ip: '::1' }), 6)
  const expired = { mx: mx2.name, ip: '127.0.0.3' }
  assert.equal(r.value('probe_mx_host_success', expired), 0)
  assert.equal(r.value('probe_mx_host_failed_phase_info', { ...expired, phase: 'tls' }), 1)
  // The certificate's facts are known although it failed: it expired on 2 January 2020.
  assert.equal(r.value('probe_ssl_earliest_cert_expiry', expired), Date.UTC(2020, 0, 2) / 1000)
  assert.match(r.debug, /mx2\.mail\.test \[127\.0\.0\.3\]: .*expired/i)
  // Each Postfix listener says who it is: the probe spoke to the host it names.
  assert.match(r.debug, /msg="S: 220 mx1\.mail\.test ESMTP[^"]*" mx=mx1\.mail\.test ip=::1\n/)
  assert.match(r.debug, /msg="S: 220 mx2\.mail\.test ESMTP[^"]*" mx=mx2\.mail\.test ip=127\.0\.0\.3\n/)

  const any = await probe(smtp('mx: { addresses: all, success: any }'), `mx:${stack.mx.domain}:${port}`)
  assert.equal(any.value('probe_success'), 1, any.debug)
})

test('mx (dnsmasq + Postfix): a domain without MX is probed on its own address; a null MX fails in lookup_mx', async () => {
  const implicit = await probe(smtp('', 'none'), `mx:${stack.mx.fallbackDomain}:${port}`)
  assert.equal(implicit.value('probe_success'), 1, implicit.debug)
  assert.equal(implicit.value('probe_mx_implicit'), 1)
  const labels = { mx: stack.mx.fallbackDomain, ip: stack.mx.fallbackAddress }
  assert.equal(implicit.value('probe_mx_host_success', labels), 1)

  const none = await probe(smtp('', 'none'), `mx:${stack.mx.nullMxDomain}:${port}`)
  assert.equal(none.failedPhase, 'lookup_mx')
  assert.equal(none.value('probe_mx_null'), 1)
})

test('mx (dnsmasq + Postfix): /sd lists the hosts, or every address with the host name for the certificate', async () => {
  const config = parseConfig(
    `modules:\n  hosts:${smtp('').replace(/\n/g, '\n    ')}\n  addresses:${smtp('mx: { addresses: all }').replace(/\n/g, '\n    ')}\n`,
    'sd.yml',
  )
  const target = `mx:${stack.mx.domain}:${port}`
  const hosts = await discoverMailExchangers('hosts', config.modules['hosts']!, target, silentLogger)
  assert.equal(hosts.status, 200, hosts.body)
  assert.deepEqual(
    (JSON.parse(hosts.body) as { targets: string[] }[]).map((g) => g.targets[0]),
    [`${mx1.name}:${port}`, `${mx2.name}:${port}`],
  )
  const addresses = await discoverMailExchangers(
    'addresses',
    config.modules['addresses']!,
    target,
    silentLogger,
  )
  const groups = JSON.parse(addresses.body) as { targets: string[]; labels: Record<string, string> }[]
  assert.deepEqual(
    groups.map((g) => [g.targets[0], g.labels['__param_hostname']]),
    [
      [`127.0.0.2:${port}`, mx1.name],
      [`[::1]:${port}`, mx1.name],
      [`127.0.0.3:${port}`, mx2.name],
    ],
  )
  // What /sd lists, /probe takes: an address with its host's name verifies against that name.
  const [first] = groups
  const one = await probe(smtp(''), first?.targets[0], { hostname: first?.labels['__param_hostname'] ?? '' })
  assert.equal(one.value('probe_success'), 1, one.debug)
})

const oneShot = runProbeCommand

test('mx (dnsmasq + Postfix): the one-shot command prints each host in the waterfall and exits 1, 0 or 2', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mailprobe-mx-'))
  const file = join(dir, 'mx.yml')
  const indent = (yaml: string) => yaml.replace(/\n/g, '\n    ')
  writeFileSync(
    file,
    `modules:\n  all:${indent(smtp('mx: { addresses: all }'))}\n  any:${indent(smtp('mx: { addresses: all, success: any }'))}\n`,
  )
  const target = `--target=mx:${stack.mx.domain}:${port}`
  const failed = await oneShot([`--config.file=${file}`, '--module=all', target])
  assert.equal(failed.code, 1, failed.stderr)
  assert.match(failed.stdout, /mx1\.mail\.test \[::1\] smtp quit +\d+\.\d+ ms +█+\n/)
  assert.match(failed.stdout, /mx2\.mail\.test \[127\.0\.0\.3\] smtp tls +\d+\.\d+ ms +█+ +✗ failed here/)
  assert.match(failed.stdout, /FAILED: all on mx:mail\.test:\d+ failed in phase tls/)

  const passed = await oneShot([`--config.file=${file}`, '--module=any', target, '--json'])
  assert.equal(passed.code, 0, passed.stderr)
  const json = JSON.parse(passed.stdout) as { success: boolean; phases: { leg: string | null }[] }
  assert.equal(json.success, true)
  assert.ok(json.phases.some((p) => p.leg === 'mx2.mail.test [127.0.0.3]'))

  const usage = await oneShot([`--config.file=${file}`, '--module=all', '--target=mx:127.0.0.1'])
  assert.equal(usage.code, 2)
  assert.match(usage.stderr, /mx: takes a domain, not an address/)
})
