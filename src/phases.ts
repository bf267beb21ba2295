// Phases: the one way a probe's steps are timed and named. One ProbePhases per probe (ctx.phases) knows
// the phase the probe is in; its timers export probe_<prober>_duration_seconds{phase} and name failures.
import type { Registry } from 'prom-client'
import { PhaseError } from './errors.ts'
import { gaugeOf, type MetricDef } from './metrics.ts'

/** A phase duration metric with its phases (metrics.ts phaseMetric). */
export type PhaseMetric<P extends string> = MetricDef & { readonly values: { readonly phase: readonly P[] } }

export interface PhaseTimer<P extends string> {
  /** Runs one step, adds its duration to the phase (phases may repeat), and names a failure by the phase. */
  <T>(name: P, step: () => Promise<T>): Promise<T>
  /** Adds a duration measured elsewhere (e.g. from a library's transaction log). */
  add(name: P, seconds: number): void
  /** The probe is now in this phase (a session that follows its own commands says so). */
  enter(name: P): void
  /** Runs a step timed elsewhere (add()); a failure is named by `name`, or by this timer's last phase. */
  named<T>(name: P | undefined, step: () => Promise<T>): Promise<T>
  /** A failure in phase `name`, named as this timer names its phases. */
  error(name: P, cause: unknown): PhaseError
}

/**
 * Where one probe is, and how its phases are named. A timer of a round trip's leg names its phases
 * `<leg>_<phase>` (send_auth, receive_select): in failures and in `current`, not in the gauge, where
 * the leg is a label.
 */
export class ProbePhases {
  readonly #registry: Registry
  #current: string | undefined

  constructor(registry: Registry) {
    this.#registry = registry
  }

  /** The phase the probe is in (or failed in), as the failure would name it; undefined before the first. */
  get current(): string | undefined {
    return this.#current
  }

  /** The phase metric's gauge (probe_<prober>_duration_seconds{phase, leg}); every phase is exported, 0 until reached. */
  timer<P extends string>(metric: PhaseMetric<P>, leg?: string): PhaseTimer<P> {
    const labels: Record<string, string> = leg === undefined ? {} : { leg }
    const fresh = this.#registry.getSingleMetric(metric.name) === undefined
    const gauge = gaugeOf(this.#registry, metric, labels)
    // A second timer on the same gauge (a reconnect) keeps what the first one measured.
    if (fresh) for (const phase of metric.values.phase) gauge.set({ ...labels, phase }, 0)

    const full = (phase: P) => (leg === undefined ? phase : `${leg}_${phase}`)
    /** This timer's own last phase: a failure outside a timed step is named by it. */
    let last: P | undefined
    const enter = (phase: P) => {
      last = phase
      this.#current = full(phase)
    }
    const error = (phase: P, cause: unknown) =>
      cause instanceof PhaseError ? cause : new PhaseError(full(phase), cause)
    const named = async <T>(phase: P | undefined, step: () => Promise<T>): Promise<T> => {
      try {
        return await step()
      } catch (cause) {
        if (cause instanceof PhaseError) throw cause
        const name = phase ?? last
        throw new PhaseError(name === undefined ? (this.#current ?? 'setup') : full(name), cause)
      }
    }
    const timer = async <T>(phase: P, step: () => Promise<T>): Promise<T> => {
      enter(phase)
      const start = performance.now()
      try {
        return await step()
      } catch (cause) {
        throw error(phase, cause)
      } finally {
        gauge.inc({ ...labels, phase }, (performance.now() - start) / 1000)
      }
    }
    return Object.assign(timer, {
      add(phase: P, seconds: number) {
        gauge.inc({ ...labels, phase }, Math.max(0, seconds))
      },
      enter,
      named,
      error,
    })
  }
}
