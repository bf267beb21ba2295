// `mailprobe_exporter probe`: one probe from the terminal, through the same handler as /probe, printed
// for a person (transcript, phase waterfall, TLS facts, mechanisms, verdict) or as JSON.
import { parseArgs } from 'node:util'
import type { MetricObjectWithValues, MetricValue } from 'prom-client'
import { loadConfig, type Config } from './config.ts'
import { createExporterMetrics } from './exporter-metrics.ts'
import { handleProbe, type ProbeOutcome } from './handler.ts'
import { History } from './history.ts'
import { silentLogger } from './logger.ts'
import { ProberStates } from './probers/index.ts'
import { VERSION } from './version.ts'

export const PROBE_USAGE = `usage: mailprobe_exporter probe --module=NAME [--target=HOST[:PORT]] [flags]
  --config.file=PATH   config file (default config/mailprobe.yml)
  --module=NAME        the module to probe with
  --target=TARGET      host, host:port, [ipv6] or [ipv6]:port, or mx:DOMAIN[:port] for every mail
                       exchanger of a domain (a module with a fixed target needs none)
  --hostname=NAME      the name TLS checks the server against instead of the target host
  --json               print the result as JSON
exit status: 0 the probe succeeded, 1 it failed, 2 bad usage or config
`

export interface OneShotIo {
  stdout: { write(text: string): unknown; isTTY?: boolean }
  stderr: { write(text: string): unknown }
  env: Record<string, string | undefined>
}

type Metrics = MetricObjectWithValues<MetricValue<string>>[]

/** A phase as the waterfall shows it: `leg` for a round trip's legs. */
interface PhaseRow {
  prober: string
  leg: string | undefined
  phase: string
  seconds: number
  failed: boolean
}

/** The one-shot result, as --json prints it. */
export interface OneShotResult {
  module: string
  target: string
  success: boolean
  failed_phase: string | null
  error: string | null
  duration_seconds: number
  phases: { prober: string; leg: string | null; phase: string; seconds: number; failed: boolean }[]
  tls: { leg: string | null; version: string | null; cipher: string | null; cert_expiry: string | null }[]
  mechanisms: { prober: string; leg: string | null; advertised: string[]; used: string | null }[]
  transcript: string[]
}

/** Runs the command; resolves with the exit status. */
export async function runOneShot(argv: string[], io: OneShotIo): Promise<number> {
  const usage = (message: string) => {
    io.stderr.write(`mailprobe_exporter probe: ${message}\n\n${PROBE_USAGE}`)
    return 2
  }
  let values
  try {
    values = parseArgs({
      args: argv,
      options: {
        'config.file': { type: 'string', default: 'config/mailprobe.yml' },
        module: { type: 'string' },
        target: { type: 'string' },
        hostname: { type: 'string' },
        json: { type: 'boolean', default: false },
      },
      strict: true,
      allowPositionals: false,
    }).values
  } catch (err) {
    return usage((err as Error).message)
  }
  const moduleName = values.module
  if (moduleName === undefined) return usage('--module is required')
  let config: Config
  try {
    config = loadConfig(values['config.file'])
  } catch (err) {
    io.stderr.write(`${(err as Error).message}\n`)
    return 2
  }
  const module = config.modules[moduleName]
  if (module === undefined)
    return usage(
      `no module ${moduleName} in ${values['config.file']} (${Object.keys(config.modules).join(', ')})`,
    )

  const states = new ProberStates({ logger: silentLogger })
  try {
    // A deferred round trip's state file must be ours: a running exporter holding it wins.
    states.configure(config)
  } catch (err) {
    io.stderr.write(`mailprobe_exporter probe: ${(err as Error).message}\n`)
    return 2
  }
  try {
    const answer = await handleProbe(
      {
        moduleName,
        module,
        target: values.target,
        hostname: values.hostname,
        scrapeTimeout: undefined,
        debug: false,
        openMetrics: false,
      },
      {
        logger: silentLogger,
        history: new History(0, 0),
        metrics: createExporterMetrics(VERSION),
        timeoutOffset: 0,
        states,
      },
    )
    if (answer.status !== 200) return usage(answer.body.trim())
    const result = await describe(moduleName, answer.outcome)
    const color = io.stdout.isTTY === true && io.env['NO_COLOR'] === undefined
    io.stdout.write(values.json ? `${JSON.stringify(result, null, 2)}\n` : render(result, color))
    return result.success ? 0 : 1
  } finally {
    await states.close()
  }
}

/** The outcome and its metrics as the result --json prints. */
async function describe(module: string, outcome: ProbeOutcome): Promise<OneShotResult> {
  const metrics = await outcome.metrics()
  const phases = phaseRows(metrics, outcome.failedPhase)
  return {
    module,
    target: outcome.target,
    success: outcome.success,
    failed_phase: outcome.failedPhase ?? null,
    error: outcome.error ?? null,
    duration_seconds: outcome.seconds,
    phases: phases.map((p) => ({ ...p, leg: p.leg ?? null })),
    tls: tlsFacts(metrics),
    mechanisms: mechanismFacts(metrics),
    transcript: [...outcome.transcript],
  }
}

const values = (metrics: Metrics, name: string) => metrics.find((m) => m.name === name)?.values ?? []
const label = (v: MetricValue<string>, key: string): string | undefined => {
  const value = (v.labels as Record<string, string | number | undefined>)[key]
  return value === undefined ? undefined : String(value)
}

/** A round trip's leg, or the mail exchanger (`mx [ip]`) an mx: probe's series are of. */
const legOf = (v: MetricValue<string>): string | undefined => {
  const mx = label(v, 'mx')
  return label(v, 'leg') ?? (mx === undefined ? undefined : `${mx} [${label(v, 'ip') ?? ''}]`)
}

/** Every reached phase of every phase metric, in the order the probe has them; the failed one marked. */
function phaseRows(metrics: Metrics, failedPhase: string | undefined): PhaseRow[] {
  const rows: PhaseRow[] = []
  // An mx: probe's hosts: each failed in its own phase (the probe's failed phase is the first host's).
  const hostFailures = new Set(
    values(metrics, 'probe_mx_host_failed_phase_info').map(
      (v) => `${legOf(v) ?? ''}|${label(v, 'phase') ?? ''}`,
    ),
  )
  for (const m of metrics) {
    const prober = /^probe_(\w+)_duration_seconds$/.exec(m.name)?.[1]
    if (prober === undefined) continue
    for (const v of m.values) {
      const phase = label(v, 'phase') ?? ''
      const leg = legOf(v)
      const failed =
        label(v, 'mx') !== undefined
          ? hostFailures.has(`${leg ?? ''}|${phase}`)
          : failedPhase === (leg === undefined ? phase : `${leg}_${phase}`)
      if (v.value > 0 || failed) rows.push({ prober, leg, phase, seconds: v.value, failed })
    }
  }
  return rows
}

function tlsFacts(metrics: Metrics): OneShotResult['tls'] {
  const legs = new Set(values(metrics, 'probe_tls_version_info').map((v) => legOf(v)))
  return [...legs].map((leg) => {
    const ofLeg = (name: string) => values(metrics, name).find((v) => legOf(v) === leg)
    const labelOf = (name: string, key: string) => {
      const v = ofLeg(name)
      return (v && label(v, key)) ?? null
    }
    const expiry = ofLeg('probe_ssl_earliest_cert_expiry')?.value
    return {
      leg: leg ?? null,
      version: labelOf('probe_tls_version_info', 'version'),
      cipher: labelOf('probe_tls_cipher_info', 'cipher'),
      cert_expiry: expiry === undefined ? null : new Date(expiry * 1000).toISOString(),
    }
  })
}

function mechanismFacts(metrics: Metrics): OneShotResult['mechanisms'] {
  const out: OneShotResult['mechanisms'] = []
  for (const prober of ['smtp', 'pop3', 'imap']) {
    const advertised = values(metrics, `probe_${prober}_auth_mechanism_advertised`)
    const used = values(metrics, `probe_${prober}_auth_mechanism_used`)
    const legs = new Set([...advertised, ...used].map((v) => legOf(v)))
    for (const leg of legs) {
      const ofLeg = (v: MetricValue<string>) => legOf(v) === leg
      // What the server offered where credentials went: under TLS when there was TLS.
      const byStage = (stage: string) =>
        advertised
          .filter((v) => ofLeg(v) && label(v, 'stage') === stage)
          .map((v) => label(v, 'mechanism') ?? '')
      const underTls = byStage('tls')
      const offered = underTls.length > 0 ? underTls : byStage('plain')
      const usedOne = used.find(ofLeg)
      out.push({
        prober,
        leg: leg ?? null,
        advertised: offered,
        used: usedOne ? (label(usedOne, 'mechanism') ?? null) : null,
      })
    }
  }
  return out
}

const BAR_WIDTH = 40

/** The result for a person: transcript, waterfall, TLS, mechanisms, verdict. */
export function render(r: OneShotResult, color: boolean): string {
  const paint = (code: string, text: string) => (color ? `\x1b[${code}m${text}\x1b[0m` : text)
  const ms = (seconds: number) => `${(seconds * 1000).toFixed(2)} ms`
  const lines = [`mailprobe_exporter probe: module ${r.module}, target ${r.target}`, '', 'Transcript:']
  lines.push(...r.transcript.map((l) => `  ${l}`), '', 'Phases:')
  const longest = Math.max(...r.phases.map((p) => p.seconds), 1e-9)
  const names = r.phases.map((p) =>
    p.leg === null ? `${p.prober} ${p.phase}` : `${p.leg} ${p.prober} ${p.phase}`,
  )
  const width = Math.max(...names.map((n) => n.length), 5)
  r.phases.forEach((p, i) => {
    const bar = '█'.repeat(Math.max(1, Math.round((p.seconds / longest) * BAR_WIDTH)))
    const row = `  ${(names[i] ?? '').padEnd(width)}  ${ms(p.seconds).padStart(11)}  ${bar}`
    lines.push(p.failed ? paint('31', `${row}  ✗ failed here`) : row)
  })
  if (r.tls.length > 0) lines.push('', 'TLS:')
  for (const t of r.tls)
    lines.push(
      `  ${t.leg === null ? '' : `${t.leg}: `}${t.version ?? '?'}, ${t.cipher ?? '?'}` +
        (t.cert_expiry === null ? '' : `, certificate expires ${t.cert_expiry}`),
    )
  if (r.mechanisms.length > 0) lines.push('', 'Mechanisms:')
  for (const m of r.mechanisms)
    lines.push(
      `  ${m.leg === null ? '' : `${m.leg} `}${m.prober}: offered ${m.advertised.join(' ') || 'none'}; used ${m.used ?? 'none'}`,
    )
  const verdict = r.success
    ? paint('32', `OK: ${r.module} on ${r.target} succeeded in ${ms(r.duration_seconds)}`)
    : paint(
        '31',
        `FAILED: ${r.module} on ${r.target} failed in phase ${r.failed_phase ?? 'setup'} after ${ms(r.duration_seconds)}: ${r.error ?? ''}`,
      )
  lines.push('', verdict)
  return lines.join('\n') + '\n'
}
