// Run one probe the way /probe does (handler included) from a module written as YAML.
import { parseConfig } from '../../src/config.ts'
import { createExporterMetrics } from '../../src/exporter-metrics.ts'
import { handleProbe, type RefusedAttempt } from '../../src/handler.ts'
import type { AuthBackoff } from '../../src/limits.ts'
import { History } from '../../src/history.ts'
import type { PhaseStep } from '../../src/phases.ts'
import { silentLogger } from '../../src/logger.ts'
import { ProberStates } from '../../src/probers/index.ts'
import { RoundtripStates } from '../../src/probers/roundtrip/state.ts'
import { parseMetrics, sampleValue, type Labels, type Sample } from './metrics.ts'

export interface ProbeOutcome {
  samples: Sample[]
  /** The ?debug=true text: log lines, metrics, module config. */
  debug: string
  seconds: number
  value(name: string, labels?: Labels): number | undefined
  /** probe_failed_phase_info's phase, or undefined on success. */
  failedPhase: string | undefined
  /** The phase steps the history keeps for the probe's waterfall. */
  steps: readonly PhaseStep[]
}

/** `moduleYaml` is the body of one module (prober: ..., ...), indented or not. */
export async function probe(
  moduleYaml: string,
  target: string | undefined,
  options: {
    scrapeTimeout?: string
    roundtripStates?: RoundtripStates
    moduleName?: string
    hostname?: string
    /** What the probers keep across probes (token sources too), to share between probes. */
    states?: ProberStates
    /** auth_backoff, enforced when given (as the exporter does), to share between probes. */
    backoff?: AuthBackoff<RefusedAttempt>
  } = {},
): Promise<ProbeOutcome> {
  const body = moduleYaml
    .replace(/^\n+/, '')
    .split('\n')
    .map((l) => '    ' + l)
    .join('\n')
  const name = options.moduleName ?? 'm'
  const config = parseConfig(`modules:\n  ${name}:\n${body}\n`, 'test.yml')
  const module = config.modules[name]!
  const history = new History()
  const start = performance.now()
  const answer = await handleProbe(
    {
      moduleName: name,
      module,
      target,
      hostname: options.hostname,
      scrapeTimeout: options.scrapeTimeout,
      debug: false,
      openMetrics: false,
    },
    {
      logger: silentLogger,
      history,
      metrics: createExporterMetrics('test'),
      timeoutOffset: 0.5,
      ...(options.backoff ? { backoff: options.backoff } : {}),
      states:
        options.states ??
        new ProberStates({}, { roundtrip: options.roundtripStates ?? new RoundtripStates() }),
    },
  )
  const seconds = (performance.now() - start) / 1000
  if (answer.status !== 200) throw new Error(`probe answered ${answer.status}: ${answer.body}`)
  const samples = parseMetrics(answer.body)
  const failed = samples.find((s) => s.name === 'probe_failed_phase_info')
  return {
    samples,
    debug: history.list()[0]?.debugText() ?? '',
    seconds,
    value: (name, labels) => sampleValue(samples, name, labels),
    failedPhase: failed?.labels['phase'],
    steps: history.list()[0]?.phases ?? [],
  }
}
