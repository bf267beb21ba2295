// The prober seam: what every prober gets (ProbeContext) and what it is (Prober).
import type { Registry } from 'prom-client'
import type { Logger } from './logger.ts'
import type { ProbePhases } from './phases.ts'
import type { RoundtripStates } from './probers/roundtrip/state.ts'
import type { Target } from './targets.ts'

/** Everything a prober gets besides its target and module. */
export interface ProbeContext {
  /** Aborts at the module deadline (min of module timeout and scrape timeout - offset). */
  readonly signal: AbortSignal
  /** New for each probe; whatever is registered here is what /probe returns. */
  readonly registry: Registry
  /** Writes to the process log and to this probe's ?debug=true buffer. */
  readonly logger: Logger
  /** Times and names the probe's phases; knows the phase it is in, for the handler when the deadline passes. */
  readonly phases: ProbePhases
  /** When the signal aborts, in ms since the epoch (round trips keep time back for cleanup). */
  readonly deadline: number
  /** Module name (round trips key their state by module and target). */
  readonly moduleName: string
  /** Deferred round trips' in-flight mails, one store per state file, shared by all probes. */
  readonly roundtripStates: RoundtripStates
}

/** Resolves when the target is healthy; rejects with the reason when it is not. */
export type Prober<M> = (target: Target, module: M, ctx: ProbeContext) => Promise<void>
