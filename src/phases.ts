// Phases: the one way a probe's steps are timed and named. One ProbePhases per probe (ctx.phases) knows
// the phase the probe is in; its timers export probe_<prober>_duration_seconds{phase} and name failures.
import type { Registry } from 'prom-client'
import { PhaseError } from './errors.ts'
import { gaugeOf, type MetricDef } from './metrics.ts'

/** A phase duration metric with its phases (metrics.ts phaseMetric). */
export type PhaseMetric<P extends string> = MetricDef & { readonly values: { readonly phase: readonly P[] } }

/**
 * One step of a probe as it happened, for the waterfall on the probe's page. `start` is in ms since the
 * ProbePhases was created (performance.now()); `name` is the full name, as a failure names it (send_auth).
 */
export interface PhaseStep {
  readonly name: string
  readonly phase: string
  readonly leg?: string
  /** Set on the steps of a sub-probe folded in by absorb(): the mail host it probed. */
  readonly host?: string
  /** The phase metric the step's time went to (probe_smtp_duration_seconds). */
  readonly metric: string
  readonly start: number
  readonly seconds: number
}

/** At most this many steps are kept per probe; the rest are only counted (ProbePhases.dropped). */
export const MAX_STEPS = 256

/** A step as kept while the probe runs: `end` is unset while a timed step is still running. */
interface StepEntry {
  readonly name: string
  readonly phase: string
  readonly leg: string | undefined
  readonly host: string | undefined
  readonly metric: string
  readonly start: number
  end: number | undefined
}

export interface PhaseTimer<P extends string> {
  /** Runs one step, adds its duration to the phase (phases may repeat), and names a failure by the phase. */
  <T>(name: P, step: () => Promise<T>): Promise<T>
  /** Adds a duration measured elsewhere (e.g. from a library's transaction log); see ProbePhases.steps(). */
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
  /** performance.now() at creation: steps' starts are relative to it. */
  readonly #origin = performance.now()
  readonly #steps: StepEntry[] = []
  #dropped = 0
  /** Where an add()ed step goes: the end of the last step that finished, or the start of the last begun. */
  #cursor = 0

  constructor(registry: Registry) {
    this.#registry = registry
  }

  /**
   * The steps timed so far, in the order they began (absorbed ones where absorb() put them), as a copy.
   * A step still running (the probe gave up on it)
   * has the seconds it has run so far. A duration given to add() was measured elsewhere and has no known
   * start: it is placed at the end of the previous step (or at the start of the step it was added in),
   * so a run of add()s lies end to end; but never so late that it would end after the add() call.
   */
  steps(): readonly PhaseStep[] {
    const now = performance.now() - this.#origin
    return this.#steps.map((e) => {
      const step: { -readonly [K in keyof PhaseStep]: PhaseStep[K] } = {
        name: e.name,
        phase: e.phase,
        metric: e.metric,
        start: e.start,
        seconds: Math.max(0, ((e.end ?? now) - e.start) / 1000),
      }
      if (e.leg !== undefined) step.leg = e.leg
      if (e.host !== undefined) step.host = e.host
      return step
    })
  }

  /** Steps not kept because MAX_STEPS were already (they are still in the gauges). */
  get dropped(): number {
    return this.#dropped
  }

  /**
   * Appends the steps of a sub-probe (one per mail host of an MX probe) with `host` set, and their starts
   * moved onto this ProbePhases' clock. Its dropped steps, and those over MAX_STEPS here, count as dropped.
   */
  absorb(other: ProbePhases, host: string): void {
    const shift = other.#origin - this.#origin
    this.#dropped += other.#dropped
    for (const step of other.steps()) {
      const start = step.start + shift
      const end = start + step.seconds * 1000
      const { name, phase, leg, metric } = step
      this.#push({ name, phase, leg, host, metric, start, end })
      this.#cursor = Math.max(this.#cursor, end)
    }
  }

  #push(entry: StepEntry): StepEntry | undefined {
    if (this.#steps.length >= MAX_STEPS) {
      this.#dropped++
      return undefined
    }
    this.#steps.push(entry)
    return entry
  }

  /** A timed step begins now; call the result when it ends. */
  #begin(name: string, phase: string, leg: string | undefined, metric: string): () => void {
    const start = performance.now() - this.#origin
    this.#cursor = Math.max(this.#cursor, start)
    const entry = this.#push({ name, phase, leg, host: undefined, metric, start, end: undefined })
    return () => {
      const end = performance.now() - this.#origin
      if (entry) entry.end = end
      this.#cursor = Math.max(this.#cursor, end)
    }
  }

  #added(name: string, phase: string, leg: string | undefined, metric: string, seconds: number) {
    const ms = (Number.isFinite(seconds) ? seconds : 0) * 1000
    // A duration is reported once it is over, so it cannot end after now: pipelined replies, each
    // measured from its own command, overlap instead of lining up into the future.
    const start = Math.max(0, Math.min(this.#cursor, performance.now() - this.#origin - ms))
    const end = start + ms
    this.#push({ name, phase, leg, host: undefined, metric, start, end })
    this.#cursor = end
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
      const done = this.#begin(full(phase), phase, leg, metric.name)
      const start = performance.now()
      try {
        return await step()
      } catch (cause) {
        throw error(phase, cause)
      } finally {
        gauge.inc({ ...labels, phase }, (performance.now() - start) / 1000)
        done()
      }
    }
    return Object.assign(timer, {
      add: (phase: P, seconds: number) => {
        const s = Math.max(0, seconds)
        gauge.inc({ ...labels, phase }, s)
        this.#added(full(phase), phase, leg, metric.name, s)
      },
      enter,
      named,
      error,
    })
  }
}
