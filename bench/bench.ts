// Benchmark: mailprobe_exporter against blackbox_exporter on the same real Postfix + Dovecot, same run.
// Run with `npm run bench` (starts the mail stack). Prints latency, throughput, CPU and memory, with ratios.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, watch, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseConfig } from '../src/config.ts'
import { smtpConversation } from '../src/probers/smtp.ts'
import { openImapMailbox } from '../src/protocol/mailbox-imap.ts'
import { buildMessage } from '../src/protocol/message.ts'
import { testContext } from '../test/helpers/context.ts'
import { mailStack } from '../test/helpers/stack.ts'
import { parseMetrics, sampleValue } from '../test/helpers/metrics.ts'

const stack = mailStack()
const dir = mkdtempSync(join(tmpdir(), 'mailprobe-bench-'))
const SEQUENTIAL = Number(process.env['BENCH_SEQUENTIAL'] ?? 200)
const CONCURRENT_TOTAL = Number(process.env['BENCH_CONCURRENT'] ?? 400)
const CONCURRENCY = 8

// The same conversation for both: greeting, EHLO, STARTTLS, TLS handshake (verified), EHLO, QUIT.
const blackboxConfig = `
modules:
  smtp_starttls:
    prober: tcp
    timeout: 10s
    tcp:
      preferred_ip_protocol: ip4
      tls_config: { ca_file: ${stack.ca}, server_name: mail.test }
      query_response:
        - expect: "^220 "
        - send: "EHLO bench.example\\r"
        - expect: "^250 "
        - send: "STARTTLS\\r"
        - expect: "^220 "
        - starttls: true
        - send: "EHLO bench.example\\r"
        - expect: "^250 "
        - send: "QUIT\\r"
        - expect: "^221 "
  imap_starttls:
    prober: tcp
    timeout: 10s
    tcp:
      preferred_ip_protocol: ip4
      tls_config: { ca_file: ${stack.ca}, server_name: mail.test }
      query_response:
        - expect: "^\\\\* OK"
        - send: "a1 STARTTLS\\r"
        - expect: "^a1 OK"
        - starttls: true
        - send: "a2 CAPABILITY\\r"
        - expect: "^a2 OK"
        - send: "a3 LOGOUT\\r"
        - expect: "^a3 OK"
`

const [user, pass] = stack.users.probe
const oursConfig = `
modules:
  smtp_starttls:
    prober: smtp
    smtp: { tls: starttls, tls_config: { ca_file: ${stack.ca}, server_name: mail.test }, ehlo: bench.example }
  smtp_submission_auth:
    prober: smtp
    allowed_targets: [127.0.0.1]
    smtp:
      tls: starttls
      tls_config: { ca_file: ${stack.ca}, server_name: mail.test }
      auth: { username: ${user}, password: ${pass} }
  imap_login:
    prober: imap
    allowed_targets: [127.0.0.1]
    imap:
      tls: starttls
      tls_config: { ca_file: ${stack.ca}, server_name: mail.test }
      auth: { username: ${user}, password: ${pass} }
  pop3_login:
    prober: pop3
    allowed_targets: [127.0.0.1]
    pop3:
      tls: stls
      tls_config: { ca_file: ${stack.ca}, server_name: mail.test }
      auth: { username: ${user}, password: ${pass} }
`

interface Exporter {
  name: string
  base: string
  process: ChildProcess
}

async function waitUp(base: string, name: string) {
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${base}/metrics`)).ok) return
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`${name} did not start`)
}

async function startExporters(): Promise<[Exporter, Exporter]> {
  writeFileSync(join(dir, 'blackbox.yml'), blackboxConfig)
  writeFileSync(join(dir, 'mailprobe.yml'), oursConfig)
  execFileSync('npm', ['run', 'build'], { stdio: 'ignore' })
  const ours = spawn(
    process.execPath,
    [
      'dist/src/main.js',
      `--config.file=${join(dir, 'mailprobe.yml')}`,
      '--web.listen-address=127.0.0.1:19786',
      '--log.level=error',
    ],
    { stdio: 'ignore' },
  )
  const blackbox = spawn(
    'prometheus-blackbox-exporter',
    [
      `--config.file=${join(dir, 'blackbox.yml')}`,
      '--web.listen-address=127.0.0.1:19115',
      '--log.level=error',
    ],
    { stdio: 'ignore' },
  )
  const exporters: [Exporter, Exporter] = [
    { name: 'mailprobe_exporter', base: 'http://127.0.0.1:19786', process: ours },
    { name: 'blackbox_exporter', base: 'http://127.0.0.1:19115', process: blackbox },
  ]
  await Promise.all(exporters.map((e) => waitUp(e.base, e.name)))
  return exporters
}

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
  return (Number(fields[11]) + Number(fields[12])) / 100 // clock ticks (USER_HZ = 100)
}

function rssMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/)
  return Number(line?.[1] ?? 0) / 1024
}

async function probeOnce(e: Exporter, module: string, target: string) {
  const start = performance.now()
  const res = await fetch(`${e.base}/probe?module=${module}&target=${target}`)
  const body = await res.text()
  const wall = performance.now() - start
  const samples = parseMetrics(body)
  const ok = sampleValue(samples, 'probe_success') === 1
  if (!ok) throw new Error(`${e.name} ${module} failed:\n${body.slice(0, 2000)}`)
  return { wall, reported: (sampleValue(samples, 'probe_duration_seconds') ?? NaN) * 1000, samples }
}

const quantile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN
}

interface Result {
  median: number
  p90: number
  p99: number
  perSecond: number
  cpuMsPerProbe: number
  phases: Record<string, number>
}

async function measure(e: Exporter, module: string, target: string, phaseMetric?: string): Promise<Result> {
  for (let i = 0; i < 20; i++) await probeOnce(e, module, target) // warm-up (JIT, TLS session caches)
  const walls: number[] = []
  const phaseSums: Record<string, number[]> = {}
  const pid = e.process.pid ?? 0
  const cpuBefore = cpuSeconds(pid)
  for (let i = 0; i < SEQUENTIAL; i++) {
    const r = await probeOnce(e, module, target)
    walls.push(r.wall)
    if (phaseMetric)
      for (const s of r.samples.filter((x) => x.name === phaseMetric))
        (phaseSums[s.labels['phase'] ?? ''] ??= []).push(s.value * 1000)
  }
  const cpuMsPerProbe = ((cpuSeconds(pid) - cpuBefore) * 1000) / SEQUENTIAL
  let next = 0
  const start = performance.now()
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next++ < CONCURRENT_TOTAL) await probeOnce(e, module, target)
    }),
  )
  const perSecond = CONCURRENT_TOTAL / ((performance.now() - start) / 1000)
  const phases = Object.fromEntries(Object.entries(phaseSums).map(([k, v]) => [k, quantile(v, 0.5)]))
  return {
    median: quantile(walls, 0.5),
    p90: quantile(walls, 0.9),
    p99: quantile(walls, 0.99),
    perSecond,
    cpuMsPerProbe,
    phases,
  }
}

const fmt = (n: number, digits = 2) => n.toFixed(digits)

/**
 * Round trip, IMAP: the lag from "stored in the mailbox" to "detected by the probe". Server stamps have
 * whole seconds, so storage is observed here directly: Dovecot delivers into Maildir by renaming the
 * file into new/, and inotify (fs.watch) reports that rename. Detection is when find() returns.
 */
async function measureDetectionLag(runs: number) {
  const [user, pass] = stack.users.probe
  const config = parseConfig(
    `modules:
  rt:
    prober: roundtrip
    allowed_targets: [127.0.0.1]
    roundtrip:
      smtp:
        tls: starttls
        tls_config: { ca_file: ${stack.ca}, server_name: mail.test }
        auth: { username: ${user}, password: ${pass} }
        send: { from: ${user}, to: ${user} }
      receive:
        protocol: imap
        target: 127.0.0.1:${stack.ports.imap}
        imap:
          tls: starttls
          tls_config: { ca_file: ${stack.ca}, server_name: mail.test }
          auth: { username: ${user}, password: ${pass} }
`,
    'bench.yml',
  )
  const module = config.modules['rt']
  if (module?.prober !== 'roundtrip') throw new Error('bench config')
  const settings = module.roundtrip
  const newDir = join(stack.dir, 'mail', 'mail.test', 'probe', 'Maildir', 'new')
  const arrivals: number[] = []
  const watcher = watch(newDir, () => arrivals.push(performance.now()))
  const lags: number[] = []
  const deliveries: number[] = []
  try {
    for (let i = 0; i < runs; i++) {
      const ctx = testContext(10_000, { moduleName: 'bench' })
      const target = { host: '127.0.0.1', port: stack.ports.imap }
      const mailbox = await openImapMailbox(target, settings.receive.imap!, settings, ctx, 'bench')
      try {
        const message = buildMessage({
          from: user,
          to: [user],
          subject: 'bench',
          headers: {},
          body: 'bench\n',
        })
        arrivals.length = 0
        await smtpConversation({ host: '127.0.0.1', port: stack.ports.submission }, settings.smtp, ctx, {
          mail: { from: user, to: [user], message },
        })
        const accepted = performance.now()
        const [found] = await mailbox.find([message.id], { until: Date.now() + 5000, wait: true })
        const detected = performance.now()
        const stored = arrivals[0]
        if (!found || stored === undefined)
          throw new Error('round trip: mail not found or not seen in Maildir')
        lags.push(detected - stored)
        deliveries.push(detected - accepted)
        await mailbox.cleanup([found], { staleBefore: 0, keep: [] })
      } finally {
        mailbox.close()
      }
    }
  } finally {
    watcher.close()
  }
  return { lags, deliveries }
}

async function main() {
  const [ours, blackbox] = await startExporters()
  try {
    const smtpTarget = `127.0.0.1:${stack.ports.submission}`
    const imapTarget = `127.0.0.1:${stack.ports.imap}`
    const rows: [string, Result, Result | undefined][] = []
    console.log(
      `sequential probes: ${SEQUENTIAL} each; concurrent: ${CONCURRENT_TOTAL} at concurrency ${CONCURRENCY}`,
    )
    const smtpOurs = await measure(ours, 'smtp_starttls', smtpTarget, 'probe_smtp_duration_seconds')
    const smtpBlackbox = await measure(blackbox, 'smtp_starttls', smtpTarget)
    rows.push(['SMTP STARTTLS (same dialogue)', smtpOurs, smtpBlackbox])
    const imapOursLogin = await measure(ours, 'imap_login', imapTarget, 'probe_imap_duration_seconds')
    const imapBlackbox = await measure(blackbox, 'imap_starttls', imapTarget)
    rows.push([
      'IMAP: ours STARTTLS+login+EXAMINE vs blackbox STARTTLS+CAPABILITY',
      imapOursLogin,
      imapBlackbox,
    ])
    rows.push([
      'SMTP STARTTLS + AUTH (ours only)',
      await measure(ours, 'smtp_submission_auth', smtpTarget),
      undefined,
    ])
    rows.push([
      'POP3 STLS + login + STAT (ours only)',
      await measure(ours, 'pop3_login', `127.0.0.1:${stack.ports.pop3}`),
      undefined,
    ])

    console.log('\n| probe | exporter | median ms | p90 ms | p99 ms | probes/s (x8) | CPU ms/probe |')
    console.log('|---|---|---|---|---|---|---|')
    for (const [name, a, b] of rows) {
      console.log(
        `| ${name} | mailprobe | ${fmt(a.median)} | ${fmt(a.p90)} | ${fmt(a.p99)} | ${fmt(a.perSecond, 0)} | ${fmt(a.cpuMsPerProbe)} |`,
      )
      if (b) {
        console.log(
          `| | blackbox | ${fmt(b.median)} | ${fmt(b.p90)} | ${fmt(b.p99)} | ${fmt(b.perSecond, 0)} | ${fmt(b.cpuMsPerProbe)} |`,
        )
        console.log(
          `| | ratio mailprobe/blackbox | ${fmt(a.median / b.median)} | ${fmt(a.p90 / b.p90)} | ${fmt(a.p99 / b.p99)} | ${fmt(a.perSecond / b.perSecond)} | ${fmt(a.cpuMsPerProbe / b.cpuMsPerProbe)} |`,
        )
      }
    }
    console.log(
      '\nmedian phase times (ms), mailprobe SMTP STARTTLS:',
      JSON.stringify(smtpOurs.phases, (_k, v: unknown) => (typeof v === 'number' ? Number(v.toFixed(3)) : v)),
    )
    console.log(
      'median phase times (ms), mailprobe IMAP login:',
      JSON.stringify(imapOursLogin.phases, (_k, v: unknown) =>
        typeof v === 'number' ? Number(v.toFixed(3)) : v,
      ),
    )
    console.log(
      `\nresident memory after the run: mailprobe ${fmt(rssMiB(ours.process.pid ?? 0), 1)} MiB, blackbox ${fmt(rssMiB(blackbox.process.pid ?? 0), 1)} MiB`,
    )
    const runs = Number(process.env['BENCH_ROUNDTRIPS'] ?? 30)
    const { lags, deliveries } = await measureDetectionLag(runs)
    console.log(
      `\nround trip (submission -> IMAP with IDLE), ${runs} runs: stored -> detected lag median ${fmt(quantile(lags, 0.5))} ms, ` +
        `p90 ${fmt(quantile(lags, 0.9))} ms, max ${fmt(Math.max(...lags))} ms; accepted -> detected median ${fmt(quantile(deliveries, 0.5))} ms ` +
        `(goal: lag under 50 ms; a poller that looks every 1-5 s lags 0.5-2.5 s on average)`,
    )
  } finally {
    ours.process.kill()
    blackbox.process.kill()
  }
}

await main()
