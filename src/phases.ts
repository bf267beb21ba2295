// phaseTimer(): the one way phases are timed and named (probe_<prober>_duration_seconds{phase}).
import { Gauge, type Registry } from 'prom-client'
import { PhaseError } from './errors.ts'

/** Where a probe is now; the handler reads it when the deadline passes. */
export interface ProbeProgress {
  phase: string | undefined
}

export interface PhaseTimer<P extends string> {
  /** Runs one step, adds its duration to the phase (phases may repeat), and tags a failure with the phase. */
  <T>(name: P, step: () => Promise<T>): Promise<T>
  /** Adds a duration measured elsewhere (e.g. from a library's transaction log). */
  add(name: P, seconds: number): void
}

/** probe_<prober>_duration_seconds{phase}; every phase is exported, 0 until reached. */
export function phaseTimer<P extends string>(
  registry: Registry,
  prober: string,
  phases: readonly P[],
  progress?: ProbeProgress,
  labels: Record<string, string> = {},
): PhaseTimer<P> {
  const name = `probe_${prober}_duration_seconds`
  const existing = registry.getSingleMetric(name)
  const gauge =
    existing instanceof Gauge
      ? existing
      : new Gauge({
          name,
          help: `Duration of ${prober} probe by phase, in seconds`,
          labelNames: ['phase', ...Object.keys(labels)],
          registers: [registry],
        })
  // A second timer on the same gauge (a reconnect) keeps what the first one measured.
  if (!(existing instanceof Gauge)) for (const phase of phases) gauge.set({ ...labels, phase }, 0)

  const timer = async <T>(phase: P, step: () => Promise<T>): Promise<T> => {
    if (progress) progress.phase = phase
    const start = performance.now()
    try {
      return await step()
    } catch (cause) {
      throw cause instanceof PhaseError ? cause : new PhaseError(phase, cause)
    } finally {
      gauge.inc({ ...labels, phase }, (performance.now() - start) / 1000)
    }
  }
  return Object.assign(timer, {
    add(phase: P, seconds: number) {
      gauge.inc({ ...labels, phase }, Math.max(0, seconds))
    },
  })
}
