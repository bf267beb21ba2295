// DNS: resolve the target ourselves (no library cache), timed, with blackbox's metric names.
import { lookup, Resolver } from 'node:dns/promises'
import { isIP } from 'node:net'
import type { Registry } from 'prom-client'
import { abortable } from '../protocol/abort.ts'
import { setGauge, type Labels, legGauge } from '../metrics.ts'
import type { Logger } from '../logger.ts'

const PROBE_DNS_LOOKUP_TIME_SECONDS = legGauge(
  'probe_dns_lookup_time_seconds',
  'Returns the time taken for probe dns lookup in seconds',
)
const PROBE_IP_PROTOCOL = legGauge('probe_ip_protocol', 'Specifies whether probe ip protocol is IP4 or IP6')
const PROBE_IP_ADDR_HASH = legGauge(
  'probe_ip_addr_hash',
  'Specifies the hash of IP address. It is useful to detect if the IP address changes.',
)

/** What resolving a target sets (blackbox_exporter names). */
export const RESOLVE_METRICS = [PROBE_DNS_LOOKUP_TIME_SECONDS, PROBE_IP_PROTOCOL, PROBE_IP_ADDR_HASH]

export interface ResolveOptions {
  preferred_ip_protocol: 'ip4' | 'ip6'
  ip_protocol_fallback: boolean
  /** Ask this server (ip:port, [ipv6]:port) instead of the system resolver; UDP, TCP when truncated. */
  dns_server?: string | undefined
}

/** One address of `family`: from dns_server when set (A or AAAA, no hosts file), else the system's. */
async function lookupOne(
  host: string,
  family: 4 | 6,
  server: string | undefined,
  signal: AbortSignal,
): Promise<{ address: string; all: string[] }> {
  if (server === undefined) {
    const answer = await abortable(lookup(host, { family, order: 'verbatim' }), signal)
    return { address: answer.address, all: [answer.address] }
  }
  // One resolver per lookup: its tries and timeouts end with the probe (cancel at the deadline).
  const resolver = new Resolver({ tries: 2, timeout: 2000 })
  resolver.setServers([server])
  const cancel = () => resolver.cancel()
  signal.addEventListener('abort', cancel, { once: true })
  try {
    const all = await abortable(family === 4 ? resolver.resolve4(host) : resolver.resolve6(host), signal)
    const address = all[0]
    if (address === undefined)
      throw Object.assign(new Error(`no ${family === 4 ? 'A' : 'AAAA'} record`), { code: 'ENODATA' })
    return { address, all }
  } finally {
    signal.removeEventListener('abort', cancel)
  }
}

export interface Resolved {
  address: string
  family: 4 | 6
}

/** FNV-1a 32-bit, as blackbox's probe_ip_addr_hash. */
export function fnv32a(text: string): number {
  let hash = 0x811c9dc5
  for (const byte of Buffer.from(text)) {
    hash ^= byte
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return hash
}

export async function resolveHost(
  host: string,
  options: ResolveOptions,
  ctx: { signal: AbortSignal; registry: Registry; logger: Logger },
  labels: Labels = {},
): Promise<Resolved> {
  const start = performance.now()
  let resolved: Resolved
  let answers: string[] = []
  const literal = isIP(host)
  if (literal !== 0) {
    resolved = { address: host, family: literal as 4 | 6 }
  } else {
    const preferred = options.preferred_ip_protocol === 'ip6' ? 6 : 4
    const order = options.ip_protocol_fallback ? [preferred, preferred === 4 ? 6 : 4] : [preferred]
    let lastError: unknown
    let found: Resolved | undefined
    for (const family of order) {
      try {
        const answer = await lookupOne(host, family as 4 | 6, options.dns_server, ctx.signal)
        found = { address: answer.address, family: family as 4 | 6 }
        answers = answer.all
        break
      } catch (err) {
        if (ctx.signal.aborted) throw err
        lastError = err
      }
    }
    if (!found)
      throw new Error(
        `cannot resolve ${host}: ${(lastError as NodeJS.ErrnoException).code ?? String(lastError)}`,
      )
    resolved = found
  }
  setGauge(ctx.registry, PROBE_DNS_LOOKUP_TIME_SECONDS, (performance.now() - start) / 1000, labels)
  setGauge(ctx.registry, PROBE_IP_PROTOCOL, resolved.family, labels)
  setGauge(ctx.registry, PROBE_IP_ADDR_HASH, fnv32a(resolved.address), labels)
  ctx.logger.debug('resolved target', {
    host,
    address: resolved.address,
    server: options.dns_server ?? 'system',
    ...(answers.length > 1 ? { answers: answers.slice(0, 20).join(' ') } : {}),
  })
  return resolved
}
