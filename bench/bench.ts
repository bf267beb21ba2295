// Benchmark: mailprobe_exporter against blackbox_exporter on the same real Postfix + Dovecot, same run (sequential,
// at concurrency 8 and at 50), then a soak of mixed probes with hostile servers (bench/soak.ts). Run with
// `npm run bench` (starts the mail stack); `-- --soak` runs only the soak, `-- --quick` shortens every part.
// Results: bench/results/.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, watch, writeFileSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { parseConfig } from '../src/config.ts'
import { smtpConversation } from '../src/dialogues/smtp.ts'
import { openImapMailbox } from '../src/probers/roundtrip/mailbox-imap.ts'
import { openPop3Mailbox } from '../src/probers/roundtrip/mailbox-pop3.ts'
import { buildMessage } from '../src/protocol/message.ts'
import { testContext } from '../test/helpers/context.ts'
import { entrypointNodeFlags } from '../test/helpers/entrypoint.ts'
import { mailStack } from '../test/helpers/stack.ts'
import { parseMetrics, sampleValue } from '../test/helpers/metrics.ts'
import { runConcurrent, type ConcurrentResult } from './concurrent.ts'
import { costGoals, costGoalsMarkdown, type CostGoal } from './goals.ts'
import { measureRawSmtp, type RawSmtpResult } from './raw-smtp.ts'
import { soakMarkdown } from './soak-report.ts'
import { SOAK_MODULES, startHostileServers } from './soak-mix.ts'
import { runSoak, type SoakResult } from './soak.ts'
import { startReadyDovecot, type ReadyDovecot } from './ready-dovecot.ts'
import { measureTlsPhases, type TlsPhaseResult } from './tls-phase.ts'
import { cpuSeconds, quantile, resident, rssMiB, type Resident } from './stats.ts'

const { values: args } = parseArgs({
  options: { soak: { type: 'boolean', default: false }, quick: { type: 'boolean', default: false } },
})
const quick = args.quick
const envNumber = (name: string, full: number, short: number) =>
  Number(process.env[name] ?? (quick ? short : full))

const stack = mailStack()
const dir = mkdtempSync(join(tmpdir(), 'mailprobe-bench-'))
const SEQUENTIAL = envNumber('BENCH_SEQUENTIAL', 200, 50)
const CONCURRENT_TOTAL = envNumber('BENCH_CONCURRENT', 400, 100)
const ROUNDTRIPS = envNumber('BENCH_ROUNDTRIPS', 30, 10)
const SOAK_PROBES = envNumber('BENCH_SOAK_PROBES', 10_000, 1000)
const SOAK_WARMUP = envNumber('BENCH_SOAK_WARMUP', 500, 100)
const SOAK_SETTLE_MS = envNumber('BENCH_SOAK_SETTLE_MS', 5000, 3000)
const CONCURRENCY = 8
const CONCURRENT_50 = envNumber('BENCH_CONCURRENT_50', 1000, 200)
const HIGH_CONCURRENCY = 50
/** The second stack's port base (bench/ready-dovecot.ts): the main stack's + 5000 unless chosen. */
const READY_PORT_BASE = Number(
  process.env['BENCH_READY_PORT_BASE'] ?? Number(process.env['MAILSTACK_PORT_BASE'] ?? 10000) + 5000,
)
/** How long both exporters sit after start-up and one /metrics answer before their idle RSS is read. */
const IDLE_SETTLE_MS = 2000

// SMTP, the same conversation for both: greeting, EHLO, STARTTLS, TLS handshake (verified), EHLO, QUIT.
// IMAP and POP3: greeting, capabilities, STARTTLS/STLS, verified TLS, capabilities again, LOGOUT/QUIT. blackbox's
// scanner strips the CR, so "^\.$" is the line that ends a multi-line POP3 answer. send appends "\n" itself.
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
        - send: "a1 CAPABILITY\\r"
        - expect: "^a1 OK"
        - send: "a2 STARTTLS\\r"
        - expect: "^a2 OK"
        - starttls: true
        - send: "a3 CAPABILITY\\r"
        - expect: "^a3 OK"
        - send: "a4 LOGOUT\\r"
        - expect: "^a4 OK"
  pop3_stls:
    prober: tcp
    timeout: 10s
    tcp:
      preferred_ip_protocol: ip4
      tls_config: { ca_file: ${stack.ca}, server_name: mail.test }
      query_response:
        - expect: "^\\\\+OK"
        - send: "CAPA\\r"
        - expect: "^\\\\.$"
        - send: "STLS\\r"
        - expect: "^\\\\+OK"
        - starttls: true
        - send: "CAPA\\r"
        - expect: "^\\\\.$"
        - send: "QUIT\\r"
        - expect: "^\\\\+OK"
`

const [user, pass] = stack.users.probe

/**
 * An IMAP or POP3 module that logs in as the probe user, over `tls`, trusting `ca` (IMAP with STATUS: the
 * shortest dialogue after the login, which the IMAP prober cannot skip). min_interval 0s, as every bench
 * module: a benchmark probes the same module and target back to back on purpose.
 */
const loginModule = (prober: 'imap' | 'pop3', tls: string, ca: string, mailboxCheck?: 'status') => `
    prober: ${prober}
    min_interval: 0s
    allowed_targets: [127.0.0.1]
    ${prober}:
      tls: ${tls}
      tls_config: { ca_file: ${ca}, server_name: mail.test }
      auth: { username: ${user}, password: ${pass} }${mailboxCheck ? `\n      mailbox_check: ${mailboxCheck}` : ''}`

/** IMAP and POP3 with STARTTLS/STLS and implicit TLS against the second stack (bench/ready-dovecot.ts). */
const readyModules = (ready: ReadyDovecot) => `
  imap_ready_starttls:${loginModule('imap', 'starttls', ready.ca, 'status')}
  imap_ready_implicit:${loginModule('imap', 'implicit', ready.ca, 'status')}
  pop3_ready_stls:${loginModule('pop3', 'stls', ready.ca)}
  pop3_ready_implicit:${loginModule('pop3', 'implicit', ready.ca)}
`

/** Our config: the main stack's modules, the soak's, and `extra` (the second stack's, while it runs). */
const oursConfig = (extra = '') => `
modules:
  smtp_starttls:
    prober: smtp
    min_interval: 0s
    smtp: { tls: starttls, tls_config: { ca_file: ${stack.ca}, server_name: mail.test }, ehlo: bench.example }
  smtp_submission_auth:
    prober: smtp
    min_interval: 0s
    allowed_targets: [127.0.0.1]
    smtp:
      tls: starttls
      tls_config: { ca_file: ${stack.ca}, server_name: mail.test }
      auth: { username: ${user}, password: ${pass} }
  imap_login:${loginModule('imap', 'starttls', stack.ca)}
  imap_login_status:${loginModule('imap', 'starttls', stack.ca, 'status')}
  pop3_login:${loginModule('pop3', 'stls', stack.ca)}
  # The implicit TLS twin of smtp_starttls: its tls phase is the yardstick for tls after STARTTLS.
  smtp_implicit:
    prober: smtp
    min_interval: 0s
    smtp: { tls: implicit, tls_config: { ca_file: ${stack.ca}, server_name: mail.test }, ehlo: bench.example }
${SOAK_MODULES}${extra}`

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

function build() {
  try {
    execFileSync('npm', ['run', 'build'], { stdio: 'pipe', encoding: 'utf8' })
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string }
    throw new Error(`npm run build failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`, { cause: err })
  }
}

/**
 * For the soak only: a full garbage collection on SIGUSR2, so that RSS before and after compares what is
 * kept, not where V8's collector happens to be. Node flags, not exporter code.
 */
const GC_ON_SIGNAL = [
  '--expose-gc',
  "--import=data:text/javascript,process.on('SIGUSR2',()=>globalThis.gc())",
]

/**
 * Node flags for the exporter under test: the image's (the Dockerfile's ENTRYPOINT), then BENCH_NODE_FLAGS,
 * e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" (the profile is written when the bench stops it); a later
 * flag wins, so BENCH_NODE_FLAGS="--max-semi-space-size=16" measures Node 20's default young generation.
 */
/** The Node binary the exporter under test runs on: BENCH_NODE (e.g. "$(bash scripts/node24.sh)", the image's Node), else this one. */
const EXPORTER_NODE = process.env['BENCH_NODE'] ?? process.execPath

const NODE_FLAGS = [
  ...entrypointNodeFlags(),
  ...(process.env['BENCH_NODE_FLAGS'] ?? '').split(' ').filter(Boolean),
]

/** This exporter as its own child process, listening on 127.0.0.1:port (build() first). */
async function startOurs(
  port: number,
  options: { gcOnSignal?: boolean; extraModules?: string } = {},
): Promise<Exporter> {
  writeFileSync(join(dir, 'mailprobe.yml'), oursConfig(options.extraModules))
  const ours = spawn(
    EXPORTER_NODE,
    [
      ...(options.gcOnSignal ? GC_ON_SIGNAL : []),
      ...NODE_FLAGS,
      'dist/src/main.js',
      `--config.file=${join(dir, 'mailprobe.yml')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=error',
    ],
    { stdio: 'ignore' },
  )
  const exporter = { name: 'mailprobe_exporter', base: `http://127.0.0.1:${port}`, process: ours }
  await waitUp(exporter.base, exporter.name)
  return exporter
}

async function startBlackbox(): Promise<Exporter> {
  writeFileSync(join(dir, 'blackbox.yml'), blackboxConfig)
  const blackbox = spawn(
    'prometheus-blackbox-exporter',
    [
      `--config.file=${join(dir, 'blackbox.yml')}`,
      '--web.listen-address=127.0.0.1:19115',
      '--log.level=error',
    ],
    { stdio: 'ignore' },
  )
  const exporter = { name: 'blackbox_exporter', base: 'http://127.0.0.1:19115', process: blackbox }
  await waitUp(exporter.base, exporter.name)
  return exporter
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
const residentText = (r: Resident) =>
  `${fmt(r.rss, 1)} MiB (${fmt(r.anon, 1)} anonymous + ${fmt(r.file, 1)} file-backed)`

/**
 * Round trip, IMAP or POP3: the lag from "stored in the mailbox" to "detected by the probe". Server stamps have
 * whole seconds, so storage is observed here directly: Dovecot delivers into Maildir by renaming the
 * file into new/, and inotify (fs.watch) reports that rename. Detection is when find() returns.
 */
async function measureDetectionLag(runs: number, protocol: 'imap' | 'pop3') {
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
        protocol: ${protocol}
        target: 127.0.0.1:${protocol === 'imap' ? stack.ports.imap : stack.ports.pop3}
        ${protocol}:
          tls: ${protocol === 'imap' ? 'starttls' : 'stls'}
          tls_config: { ca_file: ${stack.ca}, server_name: mail.test }
          auth: { username: ${user}, password: ${pass} }
`,
    'bench.yml',
  )
  const module = config.modules['rt']
  if (module?.prober !== 'roundtrip') throw new Error('bench config')
  const settings = module.roundtrip
  const { imap, pop3 } = settings.receive
  const newDir = join(stack.dir, 'mail', 'mail.test', 'probe', 'Maildir', 'new')
  const arrivals: number[] = []
  const watcher = watch(newDir, () => arrivals.push(performance.now()))
  const lags: number[] = []
  const deliveries: number[] = []
  try {
    for (let i = 0; i < runs; i++) {
      const ctx = testContext(10_000, { moduleName: 'bench' })
      const mailbox = imap
        ? await openImapMailbox({ host: '127.0.0.1', port: stack.ports.imap }, imap, settings, ctx, 'bench')
        : pop3
          ? await openPop3Mailbox({ host: '127.0.0.1', port: stack.ports.pop3 }, pop3, settings, ctx, 'bench')
          : undefined
      if (!mailbox) throw new Error('bench config: no receive section')
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

interface RoundtripFigures {
  lagMedianMs: number
  lagP90Ms: number
  lagMaxMs: number
  acceptedToDetectedMedianMs: number
}

const roundtripFigures = ({ lags, deliveries }: { lags: number[]; deliveries: number[] }) => ({
  lagMedianMs: quantile(lags, 0.5),
  lagP90Ms: quantile(lags, 0.9),
  lagMaxMs: Math.max(...lags),
  acceptedToDetectedMedianMs: quantile(deliveries, 0.5),
})

interface Comparison {
  sequential: number
  concurrent: number
  concurrency: number
  rows: { probe: string; mailprobe: Result; blackbox: Result | undefined }[]
  phasesMs: { smtpStarttls: Record<string, number>; imapLogin: Record<string, number> }
  /** Before any probe: IDLE_SETTLE_MS after both were up and had answered /metrics once. */
  rssMiBIdle: { mailprobe: Resident; blackbox: Resident; settleMs: number }
  /** The SMTP STARTTLS dialogue with node:net + node:tls alone, from the bench process (`sequential` of them). */
  rawNodeSmtp: RawSmtpResult
  rssMiBAfter: { mailprobe: number; blackbox: number }
  /** After rssMiBAfter was taken: each shared dialogue at concurrency 50 over keep-alive connections. */
  highConcurrency: {
    concurrency: number
    probes: number
    rows: { probe: string; mailprobe: ConcurrentResult; blackbox: ConcurrentResult }[]
  }
  roundtrip: Record<'imap' | 'pop3', RoundtripFigures> & { runs: number }
  /** Median tls phase after STARTTLS/STLS and on implicit TLS against the same server, per protocol. */
  tlsPhases: TlsPhaseResult[]
  costGoals: CostGoal[]
}

const roundPhases = (phases: Record<string, number>) =>
  Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, Number(v.toFixed(3))]))

/** The comparison with blackbox_exporter and the round-trip detection lag, with the second stack running. */
async function compare(): Promise<Comparison> {
  const ready = startReadyDovecot(READY_PORT_BASE)
  try {
    return await compareWith(ready.stack)
  } finally {
    ready.stop()
  }
}

async function compareWith(ready: ReadyDovecot): Promise<Comparison> {
  const ours = await startOurs(19786, { extraModules: readyModules(ready) })
  const blackbox = await startBlackbox()
  try {
    const smtpTarget = `127.0.0.1:${stack.ports.submission}`
    const imapTarget = `127.0.0.1:${stack.ports.imap}`
    const pop3Target = `127.0.0.1:${stack.ports.pop3}`
    // What both can probe. Our IMAP and POP3 probers always log in (auth is required), blackbox's tcp prober never.
    const shared = [
      {
        probe: 'SMTP STARTTLS (same dialogue)',
        ours: 'smtp_starttls',
        theirs: 'smtp_starttls',
        target: smtpTarget,
        phases: 'probe_smtp_duration_seconds',
      },
      {
        probe: 'IMAP STARTTLS + CAPABILITY + LOGOUT (ours logs in + STATUS, blackbox does not)',
        ours: 'imap_login_status',
        theirs: 'imap_starttls',
        target: imapTarget,
      },
      {
        probe: 'POP3 STLS + CAPA + QUIT (ours logs in + STAT, blackbox does not)',
        ours: 'pop3_login',
        theirs: 'pop3_stls',
        target: pop3Target,
      },
    ]
    // waitUp has had one /metrics answer from each; nothing has probed yet (ours has sat a little longer).
    await new Promise((r) => setTimeout(r, IDLE_SETTLE_MS))
    const rssMiBIdle = {
      mailprobe: resident(ours.process.pid ?? 0),
      blackbox: resident(blackbox.process.pid ?? 0),
      settleMs: IDLE_SETTLE_MS,
    }
    // The same servername and CA as the modules' tls_config, so the raw client verifies what the probers do.
    const rawNodeSmtp = await measureRawSmtp(
      {
        host: '127.0.0.1',
        port: stack.ports.submission,
        ca: stack.ca,
        servername: 'mail.test',
        ehlo: 'bench.example',
      },
      SEQUENTIAL,
    )
    const rows: Comparison['rows'] = []
    console.log(
      `sequential probes: ${SEQUENTIAL} each; concurrent: ${CONCURRENT_TOTAL} at concurrency ${CONCURRENCY}, ` +
        `then ${CONCURRENT_50} at concurrency ${HIGH_CONCURRENCY}`,
    )
    for (const d of shared)
      rows.push({
        probe: d.probe,
        mailprobe: await measure(ours, d.ours, d.target, d.phases),
        blackbox: await measure(blackbox, d.theirs, d.target),
      })
    const smtpOurs = rows[0]!.mailprobe
    const smtpTheirs = rows[0]!.blackbox!
    const imapOursLogin = await measure(ours, 'imap_login', imapTarget, 'probe_imap_duration_seconds')
    rows.push({
      probe: 'IMAP STARTTLS + login + EXAMINE (ours only)',
      mailprobe: imapOursLogin,
      blackbox: undefined,
    })
    rows.push({
      probe: 'SMTP STARTTLS + AUTH (ours only)',
      mailprobe: await measure(ours, 'smtp_submission_auth', smtpTarget),
      blackbox: undefined,
    })
    const tlsPhases = await measureTlsPhases(
      [
        {
          protocol: 'smtp',
          starttls: { module: 'smtp_starttls', target: smtpTarget },
          implicit: { module: 'smtp_implicit', target: `127.0.0.1:${stack.ports.smtps}` },
        },
        {
          protocol: 'imap',
          starttls: { module: 'imap_ready_starttls', target: `127.0.0.1:${ready.ports.imap}` },
          implicit: { module: 'imap_ready_implicit', target: `127.0.0.1:${ready.ports.imaps}` },
        },
        {
          protocol: 'pop3',
          starttls: { module: 'pop3_ready_stls', target: `127.0.0.1:${ready.ports.pop3}` },
          implicit: { module: 'pop3_ready_implicit', target: `127.0.0.1:${ready.ports.pop3s}` },
        },
      ],
      SEQUENTIAL / 2,
      async (module, target) => (await probeOnce(ours, module, target)).samples,
    )
    const rssMiBAfter = {
      mailprobe: rssMiB(ours.process.pid ?? 0),
      blackbox: rssMiB(blackbox.process.pid ?? 0),
    }
    const highRows: Comparison['highConcurrency']['rows'] = []
    for (const d of shared) {
      const run = async (e: Exporter, module: string) => {
        const result = await runConcurrent({
          base: e.base,
          pid: e.process.pid ?? 0,
          module,
          target: d.target,
          probes: CONCURRENT_50,
          concurrency: HIGH_CONCURRENCY,
        })
        if (result.firstFailure !== undefined)
          console.warn(
            `${e.name} ${module} at concurrency ${HIGH_CONCURRENCY}: ${result.failed} failed, the first: ${result.firstFailure}`,
          )
        return result
      }
      highRows.push({
        probe: d.probe,
        mailprobe: await run(ours, d.ours),
        blackbox: await run(blackbox, d.theirs),
      })
    }
    const imap = roundtripFigures(await measureDetectionLag(ROUNDTRIPS, 'imap'))
    const pop3 = roundtripFigures(await measureDetectionLag(ROUNDTRIPS, 'pop3'))
    const smtpAt50 = highRows[0]!
    const peakRow = highRows.reduce((a, b) => (b.mailprobe.rssMiB.peak > a.mailprobe.rssMiB.peak ? b : a))
    const goals = costGoals({
      cpuMsPerProbe: { mailprobe: smtpOurs.cpuMsPerProbe, blackbox: smtpTheirs.cpuMsPerProbe },
      perSecondAt50: {
        mailprobe: smtpAt50.mailprobe.perSecond,
        blackbox: smtpAt50.blackbox.perSecond,
        concurrency: HIGH_CONCURRENCY,
      },
      rssIdleMiB: rssMiBIdle,
      rssPeakMiB: {
        mailprobe: peakRow.mailprobe.rssMiB.peak,
        mailprobeAnon: Math.max(...highRows.map((r) => r.mailprobe.rssMiB.peakAnon)),
        probe: peakRow.probe.split(' (')[0] ?? peakRow.probe, // the dialogue, without the row's remarks
        blackbox: Math.max(...highRows.map((r) => r.blackbox.rssMiB.peak)),
        concurrency: HIGH_CONCURRENCY,
      },
      medianMs: { mailprobe: smtpOurs.median, rawNode: rawNodeSmtp.median },
      tlsPhases,
      roundtripMs: {
        imap: imap.acceptedToDetectedMedianMs,
        pop3: pop3.acceptedToDetectedMedianMs,
        runs: ROUNDTRIPS,
      },
    })
    return {
      sequential: SEQUENTIAL,
      concurrent: CONCURRENT_TOTAL,
      concurrency: CONCURRENCY,
      rows,
      phasesMs: { smtpStarttls: roundPhases(smtpOurs.phases), imapLogin: roundPhases(imapOursLogin.phases) },
      rssMiBIdle,
      rawNodeSmtp,
      rssMiBAfter,
      highConcurrency: { concurrency: HIGH_CONCURRENCY, probes: CONCURRENT_50, rows: highRows },
      roundtrip: { runs: ROUNDTRIPS, imap, pop3 },
      tlsPhases,
      costGoals: goals,
    }
  } finally {
    ours.process.kill()
    blackbox.process.kill()
  }
}

function comparisonMarkdown(c: Comparison): string {
  const lines = [
    `### mailprobe_exporter and blackbox_exporter (${c.sequential} sequential probes each, then ${c.concurrent} at concurrency ${c.concurrency})`,
    '',
    `| probe | exporter | median ms | p90 ms | p99 ms | probes/s (x${c.concurrency}) | CPU ms/probe |`,
    '|---|---|---|---|---|---|---|',
  ]
  for (const { probe, mailprobe: a, blackbox: b } of c.rows) {
    lines.push(
      `| ${probe} | mailprobe | ${fmt(a.median)} | ${fmt(a.p90)} | ${fmt(a.p99)} | ${fmt(a.perSecond, 0)} | ${fmt(a.cpuMsPerProbe)} |`,
    )
    if (b) {
      lines.push(
        `| | blackbox | ${fmt(b.median)} | ${fmt(b.p90)} | ${fmt(b.p99)} | ${fmt(b.perSecond, 0)} | ${fmt(b.cpuMsPerProbe)} |`,
        `| | ratio mailprobe/blackbox | ${fmt(a.median / b.median)} | ${fmt(a.p90 / b.p90)} | ${fmt(a.p99 / b.p99)} | ${fmt(a.perSecond / b.perSecond)} | ${fmt(a.cpuMsPerProbe / b.cpuMsPerProbe)} |`,
      )
    }
  }
  lines.push('', ...highConcurrencyMarkdown(c.highConcurrency))
  const r = c.roundtrip
  const raw = c.rawNodeSmtp
  lines.push(
    '',
    ...costGoalsMarkdown(c.costGoals),
    '',
    `raw Node SMTP STARTTLS conversation (node:net + node:tls from the bench process, same dialogue, CA and server name), ` +
      `${raw.conversations} sequential: median ${fmt(raw.median)} ms, p90 ${fmt(raw.p90)} ms, p99 ${fmt(raw.p99)} ms`,
    '',
    `resident memory at idle (${c.rssMiBIdle.settleMs / 1000} s after start-up and one /metrics answer, before any probe): ` +
      `mailprobe ${residentText(c.rssMiBIdle.mailprobe)}, blackbox ${residentText(c.rssMiBIdle.blackbox)}`,
    '',
    `median phase times (ms), mailprobe SMTP STARTTLS: ${JSON.stringify(c.phasesMs.smtpStarttls)}`,
    '',
    `median phase times (ms), mailprobe IMAP login: ${JSON.stringify(c.phasesMs.imapLogin)}`,
    '',
    `resident memory after the run: mailprobe ${fmt(c.rssMiBAfter.mailprobe, 1)} MiB, blackbox ${fmt(c.rssMiBAfter.blackbox, 1)} MiB`,
    '',
    `round trip (submission -> IMAP with IDLE), ${r.runs} runs: stored -> detected lag median ${fmt(r.imap.lagMedianMs)} ms, ` +
      `p90 ${fmt(r.imap.lagP90Ms)} ms, max ${fmt(r.imap.lagMaxMs)} ms; accepted -> detected median ${fmt(r.imap.acceptedToDetectedMedianMs)} ms ` +
      `(goal: lag under 50 ms; a poller that looks every 1-5 s lags 0.5-2.5 s on average)`,
    '',
    `round trip (submission -> POP3, logging in again to look), ${r.runs} runs: stored -> detected lag median ${fmt(r.pop3.lagMedianMs)} ms, ` +
      `p90 ${fmt(r.pop3.lagP90Ms)} ms, max ${fmt(r.pop3.lagMaxMs)} ms; accepted -> detected median ${fmt(r.pop3.acceptedToDetectedMedianMs)} ms ` +
      `(goal: within 100 ms of IMAP's: ${fmt(r.pop3.acceptedToDetectedMedianMs - r.imap.acceptedToDetectedMedianMs)} ms)`,
  )
  return lines.join('\n') + '\n'
}

function highConcurrencyMarkdown(h: Comparison['highConcurrency']): string[] {
  const lines = [
    `### At concurrency ${h.concurrency} (${h.probes} probes each, ${h.concurrency} keep-alive HTTP connections)`,
    '',
    '| probe | exporter | probes/s | median ms | p90 ms | p99 ms | CPU ms/probe | RSS before / peak (anonymous peak) MiB | failed | connections |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ]
  const cells = (x: ConcurrentResult) =>
    `${fmt(x.perSecond, 0)} | ${fmt(x.median)} | ${fmt(x.p90)} | ${fmt(x.p99)} | ${fmt(x.cpuMsPerProbe)} | ` +
    `${fmt(x.rssMiB.before, 1)} / ${fmt(x.rssMiB.peak, 1)} (${fmt(x.rssMiB.peakAnon, 1)}) | ${x.failed} | ${x.connections}`
  for (const { probe, mailprobe: a, blackbox: b } of h.rows)
    lines.push(
      `| ${probe} | mailprobe | ${cells(a)} |`,
      `| | blackbox | ${cells(b)} |`,
      `| | ratio mailprobe/blackbox | ${fmt(a.perSecond / b.perSecond)} | ${fmt(a.median / b.median)} | ${fmt(a.p90 / b.p90)} | ` +
        `${fmt(a.p99 / b.p99)} | ${fmt(a.cpuMsPerProbe / b.cpuMsPerProbe)} | ${fmt(a.rssMiB.peak / b.rssMiB.peak)} (peak) | | |`,
    )
  return lines
}

/** The soak against a fresh exporter process, with the hostile servers in a helper process. */
async function soak(): Promise<SoakResult> {
  const hostile = await startHostileServers()
  try {
    const ours = await startOurs(19787, { gcOnSignal: true })
    try {
      return await runSoak({
        base: ours.base,
        exporter: ours.process,
        stack,
        hostile,
        probes: SOAK_PROBES,
        warmup: SOAK_WARMUP,
        concurrency: CONCURRENCY,
        settleMs: SOAK_SETTLE_MS,
      })
    } finally {
      ours.process.kill()
    }
  } finally {
    hostile.stop()
  }
}

/** bench/results/latest.{json,md}, and a copy named by time and mode so that runs do not overwrite each other. */
function writeResults(results: object, markdown: string) {
  const out = new URL('./results/', import.meta.url).pathname
  mkdirSync(out, { recursive: true })
  const mode = `${args.soak ? 'soak' : 'all'}${quick ? '-quick' : ''}`
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  const json = JSON.stringify(results, null, 2) + '\n'
  for (const name of ['latest', `${stamp}-${mode}`]) {
    writeFileSync(join(out, `${name}.json`), json)
    writeFileSync(join(out, `${name}.md`), markdown)
  }
  return join(out, 'latest.json')
}

/** What was measured and on what: the commit, uncommitted src/ files, cores and load (other work skews it). */
function environment() {
  const git = (...a: string[]) => {
    try {
      return execFileSync('git', a, { encoding: 'utf8' }).trimEnd()
    } catch {
      return undefined
    }
  }
  return {
    node: process.version,
    /** What the exporter under test runs on (BENCH_NODE), with the image's flags. */
    exporterNode: execFileSync(EXPORTER_NODE, ['--version'], { encoding: 'utf8' }).trim(),
    exporterNodeFlags: NODE_FLAGS,
    cores: cpus().length,
    loadAverage: loadavg().map((x) => Number(x.toFixed(2))),
    commit: git('rev-parse', '--short', 'HEAD'),
    uncommittedSrc: git('status', '--porcelain', '--', 'src')?.split('\n').filter(Boolean) ?? [],
  }
}

async function main() {
  build()
  const started = new Date().toISOString()
  const before = environment()
  const comparison = args.soak ? undefined : await compare()
  if (comparison) console.log('\n' + comparisonMarkdown(comparison))
  const soakResult = await soak()
  const loadAverageAfter = loadavg().map((x) => Number(x.toFixed(2)))
  const markdown = [
    `## Benchmark ${started}${quick ? ' (--quick)' : ''}`,
    '',
    `Commit ${before.commit ?? '?'}${before.uncommittedSrc.length > 0 ? ` with uncommitted src/ changes (${before.uncommittedSrc.length} files)` : ''}, ` +
      `the exporter on Node ${before.exporterNode} (${before.exporterNodeFlags.join(' ')}), the benchmark's clients on Node ${before.node}, ${before.cores} cores, load average ${before.loadAverage.join(' ')} at the start, ${loadAverageAfter.join(' ')} at the end.`,
    '',
    ...(comparison ? [comparisonMarkdown(comparison)] : []),
    soakMarkdown(soakResult),
  ].join('\n')
  const file = writeResults(
    {
      started,
      quick,
      mode: args.soak ? 'soak' : 'all',
      environment: { ...before, loadAverageAfter },
      comparison,
      soak: soakResult,
    },
    markdown,
  )
  console.log('\n' + soakMarkdown(soakResult))
  console.log(`results: ${file} (and latest.md next to it)`)
}

await main()
