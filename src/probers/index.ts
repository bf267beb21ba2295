// The probers. Adding one is a folder with its definition and a line in PROBERS: the module schema (a
// union over `prober`), the dispatch and every per-prober default below come from the definitions.
import { z } from 'zod'
import type { MetricDef } from '../metrics.ts'
import {
  PROBE_METRICS,
  type ModuleOf,
  type ProbeContext,
  type ProberDefinition,
  type ProberState,
  type StateDeps,
} from '../prober.ts'
import { moduleFields, type CredentialLeg } from '../settings.ts'
import type { ResolveOptions } from '../dialogues/resolve.ts'
import { MX_DEFAULTS, MX_METRICS, type MxPlan } from '../mx.ts'
import { TokenSources } from '../oauth2/sources.ts'
import { parseProbeTarget, type ProbeTarget, type Target } from '../targets.ts'
import { imapProber } from './imap/index.ts'
import { pop3Prober } from './pop3/index.ts'
import { roundtripProber } from './roundtrip/index.ts'
import { smtpProber } from './smtp/index.ts'

export const PROBERS = [smtpProber, pop3Prober, imapProber, roundtripProber] as const

type Definition = (typeof PROBERS)[number]
type ModuleOfDefinition<D> = D extends { name: infer N extends string; settings: infer S extends z.ZodType }
  ? ModuleOf<N, z.output<S>>
  : never
/** A module as loaded: the keys every module has, `prober`, its section, and `fixed_target` parsed. */
export type Module = ModuleOfDefinition<Definition> & { fixed_target?: ProbeTarget | undefined }
export type ProberName = Definition['name']

// One place that forgets the link between a module's `prober` and its definition's types.
type AnyDefinition = ProberDefinition<string, z.ZodType, ProberState | undefined>
const BY_NAME = new Map<string, AnyDefinition>(PROBERS.map((d) => [d.name, d as unknown as AnyDefinition]))
function definitionOf(module: { prober: string }): AnyDefinition {
  const definition = BY_NAME.get(module.prober)
  if (!definition) throw new Error(`no prober ${module.prober}`) // the schema admits only known probers
  return definition
}
const sectionOf = (module: { prober: string }) =>
  (module as unknown as Record<string, unknown>)[module.prober]

/** Runs the module's prober, with the state its definition keeps in `states`. */
export function runProber(
  target: Target,
  module: Module,
  ctx: Omit<ProbeContext, 'state' | 'tokens'>,
  states: ProberStates,
): Promise<void> {
  const state = states.of(module.prober)
  return definitionOf(module).probe(target, module, { ...ctx, state, tokens: states.tokens })
}

/**
 * What the probers keep across probes (ProberDefinition.createState), made once per exporter: each
 * state is told the config at start and on reload (it may refuse it), and closed at shutdown.
 */
export class ProberStates {
  readonly #states = new Map<string, ProberState>()
  /** The OAuth2 token sources every prober's auth blocks share (ProbeContext.tokens). */
  readonly tokens: TokenSources

  /** `given` replaces a prober's own state (tests share one across exporter lifetimes this way). */
  constructor(deps: StateDeps = {}, given: Partial<Record<ProberName, ProberState>> = {}) {
    this.tokens = new TokenSources(deps.logger)
    for (const definition of BY_NAME.values()) {
      const own = (given as Record<string, ProberState | undefined>)[definition.name]
      const state = own ?? definition.createState?.(deps)
      if (state !== undefined) this.#states.set(definition.name, state)
    }
  }

  of(prober: string): ProberState | undefined {
    return this.#states.get(prober)
  }

  /**
   * A config at start or on reload; throws (the first state's refusal) to refuse it. States told before
   * the refusal keep what they took (the round trip's locks, released at close): there is one today.
   */
  configure(config: Parameters<NonNullable<ProberState['configure']>>[0]): void {
    for (const state of this.#states.values()) state.configure?.(config)
  }

  async close(): Promise<void> {
    await Promise.all([
      ...[...this.#states.values()].map((state) => state.close?.() ?? Promise.resolve()),
      this.tokens.close(),
    ])
  }
}

/** The port a bare host means for this module (the protocol's well-known port for its TLS mode). */
export function defaultPort(module: Module | ModuleOfDefinition<Definition>): number {
  return definitionOf(module).defaultPort(sectionOf(module))
}

/** Whether the module's prober speaks to mail exchangers, so that `mx:domain` targets are for it. */
export function probesMailExchangers(module: { prober: string }): boolean {
  return definitionOf(module).mailExchangers === true
}

/** How the module probes mx: targets: its mx section, and how its protocol section resolves names. */
export function mxPlanOf(module: Module): MxPlan {
  const section = sectionOf(module) as Partial<ResolveOptions>
  return {
    settings: module.mx ?? MX_DEFAULTS,
    resolve: {
      preferred_ip_protocol: section.preferred_ip_protocol ?? 'ip4',
      ip_protocol_fallback: section.ip_protocol_fallback ?? true,
      dns_server: section.dns_server,
    },
    allowedTargets: module.allowed_targets,
  }
}

/** Whether the module sends credentials somewhere (a login the server may refuse, see auth_backoff). */
export function logsIn(module: { prober: string }): boolean {
  return credentialLegs(module).length > 0
}

function credentialLegs(module: { prober: string }): CredentialLeg[] {
  return definitionOf(module).credentialLegs(sectionOf(module))
}

function sendsMail(module: { prober: string }): boolean {
  return definitionOf(module).sendsMail(sectionOf(module))
}

/** The module schema: `prober` chooses the definition whose section the module has. */
function moduleSchema<N extends string, S extends z.ZodType>(
  definition: ProberDefinition<N, S, ProberState | undefined>,
) {
  return z.strictObject({
    prober: z.literal(definition.name),
    ...moduleFields,
    [definition.name]: definition.settings,
  })
}

type Loaded = ModuleOfDefinition<Definition>

/** The module with min_interval in seconds: as configured, else by what a probe does. */
function withDefaults(m: Omit<Loaded, 'min_interval'> & { min_interval?: number | undefined }): Module {
  const fallback = sendsMail(m) ? 10 : credentialLegs(m).length > 0 ? 1 : 0
  const module = { ...m, min_interval: m.min_interval ?? fallback } as Loaded
  if (m.target === undefined) return module
  // Checked in superRefine: a fixed target parses.
  const fixed = parseProbeTarget(m.target, defaultPort(module))
  return typeof fixed === 'string' ? module : { ...module, fixed_target: fixed }
}

const [first, ...others] = PROBERS.map((d) => moduleSchema(d as unknown as AnyDefinition))
if (first === undefined) throw new Error('no probers') // PROBERS is a non-empty literal
export const ModuleSchema = z
  .discriminatedUnion('prober', [first, ...others])
  .superRefine((raw, ctx) => {
    const m = raw as unknown as Loaded
    const issue = (path: (string | number)[], message: string) =>
      ctx.addIssue({ code: 'custom', path, message })
    const unrestricted = m.target === undefined && m.allowed_targets === undefined
    if (unrestricted && sendsMail(m))
      issue(
        ['allowed_targets'],
        'this module sends mail: restrict where with `target` or `allowed_targets`, ' +
          'otherwise anyone who can reach the exporter can make it send mail anywhere',
      )
    else if (unrestricted && credentialLegs(m).length > 0)
      issue(
        ['allowed_targets'],
        'this module sends credentials: restrict where with `target` or `allowed_targets`, ' +
          'so that nobody can make the exporter send them to a host of their choosing',
      )
    if (m.target !== undefined) {
      // A fixed target is the module's only allowed target: it must parse, or nothing would be checked.
      const parsed = parseProbeTarget(m.target, defaultPort(m))
      if (typeof parsed === 'string') issue(['target'], parsed)
      else if ('mx' in parsed && !probesMailExchangers(m))
        issue(['target'], `mx: targets are for probers that speak to mail exchangers (smtp), not ${m.prober}`)
      if (m.allowed_targets !== undefined)
        issue(['allowed_targets'], 'give `target` (one fixed target) or `allowed_targets`, not both')
    }
    for (const leg of credentialLegs(m))
      if (leg.tls === 'none' && !leg.allowPlaintext && !leg.retriesWithStarttls)
        issue(
          [...leg.path, 'tls'],
          'tls: none would send the password in the clear: set auth.allow_plaintext: true to allow that',
        )
    if (m.mx !== undefined && !probesMailExchangers(m))
      issue(['mx'], `mx applies to mx: targets, which are for smtp modules, not ${m.prober}`)
    definitionOf(m).check?.(m, issue)
  })
  .transform((m) => withDefaults(m as unknown as Loaded))

/**
 * The metric catalogue: every metric a probe may answer with (the handler's, then each prober's and its
 * dialogues'), each once. test/unit/catalogue.test.ts holds it against grafana/metrics.json.
 */
export const PROBE_CATALOGUE: readonly MetricDef[] = [
  ...new Map(
    [...PROBE_METRICS, ...PROBERS.flatMap((d): readonly MetricDef[] => d.metrics), ...MX_METRICS].map((m) => [
      m.name,
      m,
    ]),
  ).values(),
]
