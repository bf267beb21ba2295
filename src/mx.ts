// MX targets: `mx:example.com` probes every mail exchanger of a domain (and, with mx.addresses: all,
// each of their addresses) in parallel within the one deadline. Each host is probed by the module's
// own prober exactly as a host:port target would be, into a registry of its own; its metrics are then
// folded into the answer with `mx` and `ip` labels, and the overall probe_success follows mx.success.
import { Registry } from 'prom-client'
import { PhaseError, describeFailure } from './errors.ts'
import {
  lookupAddresses,
  lookupMx,
  type MailExchanger,
  type Resolved,
  type ResolveOptions,
} from './dialogues/resolve.ts'
import { foldRegistries, gauge, phaseMetric, setGauge } from './metrics.ts'
import { ProbePhases } from './phases.ts'
import type { ProbeContext } from './prober.ts'
import type { MxSettings } from './settings.ts'
import { formatTarget, targetAllowed, type MxTarget, type Target, type TargetRule } from './targets.ts'

const PROBE_MX_DURATION_SECONDS = phaseMetric('mx', ['lookup_mx', 'resolve_hosts', 'probe_hosts'], false)
const PROBE_MX_NULL = gauge(
  'probe_mx_null',
  'Whether the domain has a null MX (RFC 7505): it says it accepts no mail',
)
const PROBE_MX_IMPLICIT = gauge(
  'probe_mx_implicit',
  'Whether the domain has no MX records, so that its own addresses were probed (RFC 5321 5.1)',
)
const PROBE_MX_HOSTS = gauge('probe_mx_hosts', 'Number of mail exchangers probed (at most mx.max_hosts)')
const PROBE_MX_PREFERENCE = gauge(
  'probe_mx_preference',
  'MX preference of each mail exchanger probed (lower is preferred)',
  ['mx'],
)
const PROBE_MX_ADDRESSES = gauge('probe_mx_addresses', 'Number of mail exchanger addresses probed')
const PROBE_MX_ADDRESSES_SUCCEEDED = gauge(
  'probe_mx_addresses_succeeded',
  'Number of mail exchanger addresses whose probe succeeded',
)
const PROBE_MX_HOST_SUCCESS = gauge(
  'probe_mx_host_success',
  'Whether the probe of this mail exchanger address succeeded',
  ['mx', 'ip'],
)
const PROBE_MX_HOST_DURATION_SECONDS = gauge(
  'probe_mx_host_duration_seconds',
  'How long the probe of this mail exchanger address took, in seconds',
  ['mx', 'ip'],
)
const PROBE_MX_HOST_FAILED_PHASE = gauge(
  'probe_mx_host_failed_phase_info',
  'The phase in which the probe of this mail exchanger address failed (1), absent on success',
  ['mx', 'ip', 'phase'],
)

/** What an mx: probe sets besides its hosts' own metrics (which carry `mx` and `ip` on top of theirs). */
export const MX_METRICS = [
  PROBE_MX_DURATION_SECONDS,
  PROBE_MX_NULL,
  PROBE_MX_IMPLICIT,
  PROBE_MX_HOSTS,
  PROBE_MX_PREFERENCE,
  PROBE_MX_ADDRESSES,
  PROBE_MX_ADDRESSES_SUCCEEDED,
  PROBE_MX_HOST_SUCCESS,
  PROBE_MX_HOST_DURATION_SECONDS,
  PROBE_MX_HOST_FAILED_PHASE,
]

export const MX_DEFAULTS: MxSettings = {
  addresses: 'preferred',
  success: 'all',
  max_hosts: 10,
  max_addresses: 4,
  max_parallel: 4,
}

/** How a module probes mx: targets: its mx section, how its protocol section resolves, allowed_targets. */
export interface MxPlan {
  settings: MxSettings
  resolve: ResolveOptions
  allowedTargets: readonly TargetRule[] | undefined
}

type MxContext = Omit<ProbeContext, 'state' | 'tokens'>

/** Probes one host as a host:port target is probed (the module's prober), in the context given. */
export type HostProbe = (host: Target, ctx: MxContext) => Promise<void>

/** The domain has a null MX (RFC 7505): it says it accepts no mail. */
export class NullMxError extends Error {
  override name = 'NullMxError'
  constructor(domain: string) {
    super(`${domain} has a null MX (RFC 7505): it accepts no mail`)
  }
}

/** One address of one mail exchanger to probe (`ip` empty when the host did not resolve). */
export interface MxAddress {
  mx: string
  preference: number
  ip: string
  /** Why it is not probed: its name did not resolve, or it is not in allowed_targets. */
  skip?: { phase: string; reason: string }
}

/** The result of one address's probe. */
interface HostResult {
  address: MxAddress
  success: boolean
  seconds: number
  failedPhase: string | undefined
  error: string | undefined
  registry: Registry | undefined
}

/**
 * The mail exchangers of `target.mx` and the addresses to probe, by preference: an implicit MX (no
 * MX records) is the domain itself; a null MX fails. Sets the lookup's metrics; throws a PhaseError.
 */
export async function mailExchangerAddresses(
  target: MxTarget,
  plan: MxPlan,
  ctx: Pick<MxContext, 'signal' | 'registry' | 'logger' | 'phases'>,
): Promise<MxAddress[]> {
  const { settings, resolve: options } = plan
  const phase = ctx.phases.timer(PROBE_MX_DURATION_SECONDS)
  const found = await phase('lookup_mx', () => lookupMx(target.mx, options.dns_server, ctx.signal))
  setGauge(ctx.registry, PROBE_MX_NULL, found === 'null' ? 1 : 0)
  setGauge(ctx.registry, PROBE_MX_IMPLICIT, found === 'implicit' ? 1 : 0)
  if (found === 'null') throw phase.error('lookup_mx', new NullMxError(target.mx))
  const all: MailExchanger[] = found === 'implicit' ? [{ name: target.mx, preference: 0 }] : found
  const hosts = all.slice(0, settings.max_hosts)
  ctx.logger.debug('mail exchangers', {
    domain: target.mx,
    server: options.dns_server ?? 'system',
    ...(found === 'implicit' ? { implicit: true } : {}),
    hosts: hosts.map((h) => `${h.preference} ${h.name}`).join(', '),
    ...(all.length > hosts.length ? { left_out: all.length - hosts.length } : {}),
  })
  setGauge(ctx.registry, PROBE_MX_HOSTS, hosts.length)
  for (const host of hosts)
    setGauge(ctx.registry, PROBE_MX_PREFERENCE, host.preference, {}, { mx: host.name })

  const resolved = await phase('resolve_hosts', () =>
    Promise.all(
      hosts.map((host) =>
        lookupAddresses(host.name, options, ctx.signal).then(
          (addresses): Resolved[] | Error => addresses,
          (err: unknown): Resolved[] | Error => (err instanceof Error ? err : new Error(String(err))),
        ),
      ),
    ),
  )
  return hosts.flatMap((host, i): MxAddress[] => {
    const answer = resolved[i]
    if (answer === undefined || answer instanceof Error)
      return [
        {
          mx: host.name,
          preference: host.preference,
          ip: '',
          skip: { phase: 'resolve', reason: answer?.message ?? 'not resolved' },
        },
      ]
    const chosen = settings.addresses === 'all' ? answer.slice(0, settings.max_addresses) : answer.slice(0, 1)
    return chosen.map((a) =>
      allowed({ mx: host.name, preference: host.preference, ip: a.address }, target, plan),
    )
  })
}

/** With allowed_targets, an address is probed when its host name or the address itself is allowed. */
function allowed(address: MxAddress, target: MxTarget, plan: MxPlan): MxAddress {
  const rules = plan.allowedTargets
  if (rules === undefined) return address
  const byName = targetAllowed({ host: address.mx, port: target.port }, rules)
  if (byName || targetAllowed({ host: address.ip, port: target.port }, rules)) return address
  const where = formatTarget({ host: address.ip, port: target.port })
  return {
    ...address,
    skip: { phase: 'target', reason: `${address.mx} (${where}) is not in allowed_targets` },
  }
}

/** Probes a domain's mail exchangers; resolves when mx.success holds, else rejects with the first failure. */
export async function probeMailExchangers(
  target: MxTarget,
  plan: MxPlan,
  ctx: MxContext,
  probeHost: HostProbe,
): Promise<void> {
  const { settings } = plan
  const addresses = await mailExchangerAddresses(target, plan, ctx)
  const phase = ctx.phases.timer(PROBE_MX_DURATION_SECONDS)
  const results = await phase('probe_hosts', () =>
    inParallel(addresses, settings.max_parallel, (address) => probeAddress(address, target, ctx, probeHost)),
  )
  await foldRegistries(
    ctx.registry,
    results.flatMap((r) =>
      r.registry ? [{ registry: r.registry, labels: { mx: r.address.mx, ip: r.address.ip } }] : [],
    ),
  )

  const succeeded = results.filter((r) => r.success).length
  setGauge(ctx.registry, PROBE_MX_ADDRESSES, results.length)
  setGauge(ctx.registry, PROBE_MX_ADDRESSES_SUCCEEDED, succeeded)
  for (const r of results) {
    const labels = { mx: r.address.mx, ip: r.address.ip }
    setGauge(ctx.registry, PROBE_MX_HOST_SUCCESS, r.success ? 1 : 0, {}, labels)
    setGauge(ctx.registry, PROBE_MX_HOST_DURATION_SECONDS, r.seconds, {}, labels)
    if (r.failedPhase !== undefined)
      setGauge(ctx.registry, PROBE_MX_HOST_FAILED_PHASE, 1, {}, { ...labels, phase: r.failedPhase })
  }
  const met = settings.success === 'all' ? succeeded === results.length : succeeded > 0
  if (met && results.length > 0) return
  const first = results.find((r) => !r.success)
  const rule = `${results.length - succeeded} of ${results.length} mail exchanger addresses failed (mx.success: ${settings.success})`
  if (first === undefined) throw phase.error('probe_hosts', new Error(rule))
  const where = first.address.ip === '' ? first.address.mx : `${first.address.mx} [${first.address.ip}]`
  throw new PhaseError(
    first.failedPhase ?? 'setup',
    new Error(`${where}: ${first.error ?? 'failed'}; ${rule}`),
  )
}

/** One address, probed by the module's prober into a registry of its own, with the MX name for TLS. */
async function probeAddress(
  address: MxAddress,
  target: MxTarget,
  ctx: MxContext,
  probeHost: HostProbe,
): Promise<HostResult> {
  const logger = ctx.logger.child({ mx: address.mx, ip: address.ip })
  if (address.skip !== undefined) {
    logger.warn('mail exchanger not probed', { phase: address.skip.phase, err: address.skip.reason })
    const { phase, reason } = address.skip
    return { address, success: false, seconds: 0, failedPhase: phase, error: reason, registry: undefined }
  }
  const registry = new Registry()
  const phases = new ProbePhases(registry)
  const start = performance.now()
  const host = { host: address.ip, port: target.port, serverName: address.mx }
  try {
    await probeHost(host, { ...ctx, registry, phases, logger }).finally(() =>
      ctx.phases.absorb(phases, `${address.mx} [${address.ip}]`),
    )
    const seconds = (performance.now() - start) / 1000
    logger.debug('mail exchanger succeeded', { duration_seconds: seconds.toFixed(3) })
    return { address, success: true, seconds, failedPhase: undefined, error: undefined, registry }
  } catch (err) {
    const seconds = (performance.now() - start) / 1000
    const { phase: failedPhase, message: error } = describeFailure(err, phases.current)
    logger.warn('mail exchanger failed', {
      phase: failedPhase,
      duration_seconds: seconds.toFixed(3),
      err: error,
    })
    return { address, success: false, seconds, failedPhase, error, registry }
  }
}

/** Runs `run` over `items`, at most `limit` at once; results in the order of `items`. */
async function inParallel<T, R>(
  items: readonly T[],
  limit: number,
  run: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array<R>(items.length)
  let next = 0
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) results[i] = await run(items[i] as T)
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return results
}
