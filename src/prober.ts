// The prober seam: what every prober gets (ProbeContext) and what a prober is (ProberDefinition).
import type { Registry } from 'prom-client'
import type { z } from 'zod'
import type { Logger } from './logger.ts'
import type { TokenSources } from './oauth2/sources.ts'
import { gauge, type MetricDef } from './metrics.ts'
import type { ProbePhases } from './phases.ts'
import type { CredentialLeg, ModuleFields } from './settings.ts'
import type { Target } from './targets.ts'

/** What every probe reports, whatever its prober (handler.ts sets them). */
export const PROBE_SUCCESS = gauge('probe_success', 'Displays whether or not the probe was a success')
export const PROBE_DURATION = gauge(
  'probe_duration_seconds',
  'Returns how long the probe took to complete in seconds',
)
export const PROBE_TIMEOUT = gauge('probe_timeout_seconds', 'Returns the deadline of the probe in seconds')
export const PROBE_FAILED_PHASE = gauge(
  'probe_failed_phase_info',
  'The phase in which the probe failed (1), absent on success',
  ['phase'],
)
export const PROBE_AUTH_BACKOFF = gauge(
  'probe_auth_backoff',
  "1 when this answer repeats the last attempt's refused login without logging in again (auth_backoff), else 0",
)
export const PROBE_METRICS = [
  PROBE_SUCCESS,
  PROBE_DURATION,
  PROBE_TIMEOUT,
  PROBE_FAILED_PHASE,
  PROBE_AUTH_BACKOFF,
]

/** Everything a prober gets besides its target and module; `state` is what its definition's createState made. */
export interface ProbeContext<St = unknown> {
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
  /** What the prober keeps across probes (ProberDefinition.createState); undefined for most. */
  readonly state: St
  /** The exporter's OAuth2 token sources (an auth block with oauth2 gets its access tokens there). */
  readonly tokens: TokenSources
}

/** What a prober keeps across probes, made once per exporter (the round trip's in-flight mails). */
export interface ProberState {
  /** The config, at start and on every reload; throws to refuse it (the previous config then stays). */
  configure?(config: { modules: Record<string, ModuleFields & { prober: string }> }): void
  /** At shutdown, after the last probe: write what must survive, let go of what it holds. */
  close?(): Promise<void>
}

/** What createState may use: the exporter's logger and its own registry (/metrics). */
export interface StateDeps {
  logger?: Logger | undefined
  registry?: Registry | undefined
}

/** A module of prober N: the keys every module has, `prober: N`, and its own section under the key N. */
export type ModuleOf<N extends string, S> = ModuleFields & { prober: N } & { [K in N]: S }

/**
 * A prober: its settings section, the port a bare host means, which of its settings carry credentials,
 * and its probe. probers/index.ts builds the module schema, the dispatch and the defaults from these.
 */
export interface ProberDefinition<
  N extends string = string,
  S extends z.ZodType = z.ZodType,
  St extends ProberState | undefined = undefined,
> {
  readonly name: N
  /** The module's own section, under the key `name` (e.g. `smtp:`). */
  readonly settings: S
  /** The port a target without one means (the protocol's well-known port for its TLS mode). */
  defaultPort(settings: z.output<S>): number
  /** The sections that send credentials (a module with any needs `target` or `allowed_targets`). */
  credentialLegs(settings: z.output<S>): CredentialLeg[]
  /** Whether a probe sends a mail (such a module needs `target` or `allowed_targets`, and min_interval 10s). */
  sendsMail(settings: z.output<S>): boolean
  /** Whether `mx:domain` targets are for this prober: it speaks to a domain's mail exchangers (src/mx.ts). */
  readonly mailExchangers?: boolean
  /** Every metric a probe of this prober may set (its dialogues' too): the catalogue is made of these. */
  readonly metrics: readonly MetricDef[]
  /** Checks that need the whole module (its timeout, say); each problem goes to `issue`. */
  check?(module: ModuleOf<N, z.output<S>>, issue: (path: string[], message: string) => void): void
  /** What the prober keeps across probes, made once per exporter; ctx.state in each probe. */
  createState?(deps: StateDeps): St
  /** Resolves when the target is healthy; rejects with the reason when it is not. */
  probe(target: Target, module: ModuleOf<N, z.output<S>>, ctx: ProbeContext<St>): Promise<void>
}

/** Declares a prober; the identity, for type inference of the settings. */
export function defineProber<
  N extends string,
  S extends z.ZodType,
  St extends ProberState | undefined = undefined,
>(definition: ProberDefinition<N, S, St>): ProberDefinition<N, S, St> {
  return definition
}

/** Resolves when the target is healthy; rejects with the reason when it is not. */
export type Prober<M, St = unknown> = (target: Target, module: M, ctx: ProbeContext<St>) => Promise<void>
