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

/** A resolver of our own for one question: its tries and timeouts end with the probe (cancel at the deadline). */
async function ask<T>(
  server: string | undefined,
  signal: AbortSignal,
  question: (resolver: Resolver) => Promise<T>,
): Promise<T> {
  const resolver = new Resolver({ tries: 2, timeout: 2000 })
  if (server !== undefined) resolver.setServers([server])
  const cancel = () => resolver.cancel()
  signal.addEventListener('abort', cancel, { once: true })
  try {
    return await abortable(question(resolver), signal)
  } finally {
    signal.removeEventListener('abort', cancel)
  }
}

/** Every address of `family`: from dns_server when set (A or AAAA, no hosts file), else the system's. */
async function lookupFamily(
  host: string,
  family: 4 | 6,
  server: string | undefined,
  signal: AbortSignal,
): Promise<string[]> {
  const all =
    server === undefined
      ? (await abortable(lookup(host, { family, all: true, order: 'verbatim' }), signal)).map(
          (a) => a.address,
        )
      : await ask(server, signal, (r) => (family === 4 ? r.resolve4(host) : r.resolve6(host)))
  if (all.length === 0)
    throw Object.assign(new Error(`no ${family === 4 ? 'A' : 'AAAA'} record`), { code: 'ENODATA' })
  return all
}

/** The families to ask, in order: the preferred one, then the other with ip_protocol_fallback. */
function familyOrder(options: ResolveOptions): (4 | 6)[] {
  const preferred = options.preferred_ip_protocol === 'ip6' ? 6 : 4
  return options.ip_protocol_fallback ? [preferred, preferred === 4 ? 6 : 4] : [preferred]
}

/** A mail exchanger: its name (lower case, no trailing dot) and preference. */
export interface MailExchanger {
  name: string
  preference: number
}

/**
 * The MX records of a domain, by preference: `implicit` when it has none (RFC 5321 5.1: the domain
 * itself is then the mail exchanger), `null` for a null MX (RFC 7505: the domain accepts no mail).
 * MX queries always go to a DNS server (dns_server, else the system's from resolv.conf): there is
 * no getaddrinfo for them.
 */
export async function lookupMx(
  domain: string,
  server: string | undefined,
  signal: AbortSignal,
): Promise<MailExchanger[] | 'implicit' | 'null'> {
  let records: { exchange: string; priority: number }[]
  try {
    records = await ask(server, signal, (r) => r.resolveMx(domain))
  } catch (err) {
    if (!signal.aborted && (err as NodeJS.ErrnoException).code === 'ENODATA') return 'implicit'
    throw new Error(`cannot look up the MX records of ${domain}: ${describe(err)}`, { cause: err })
  }
  const exchangers = records
    .map((r) => ({ name: r.exchange.toLowerCase().replace(/\.$/, ''), preference: r.priority }))
    .filter((r) => r.name !== '')
  if (exchangers.length === 0) return records.length > 0 ? 'null' : 'implicit'
  exchangers.sort((a, b) => a.preference - b.preference || a.name.localeCompare(b.name))
  return exchangers.filter((r, i) => exchangers.findIndex((o) => o.name === r.name) === i)
}

/**
 * Every address of a host, the preferred family first (IPv4 and IPv6 both; one family only without
 * ip_protocol_fallback), from dns_server when set, else the system resolver.
 */
export async function lookupAddresses(
  host: string,
  options: ResolveOptions,
  signal: AbortSignal,
): Promise<Resolved[]> {
  if (isIP(host) !== 0) return [{ address: host, family: isIP(host) as 4 | 6 }]
  const found: Resolved[] = []
  let lastError: unknown
  for (const family of familyOrder(options)) {
    try {
      const answers = await lookupFamily(host, family, options.dns_server, signal)
      found.push(...answers.map((address) => ({ address, family })))
    } catch (err) {
      if (signal.aborted) throw err
      lastError = err
    }
  }
  if (found.length === 0) throw new Error(`cannot resolve ${host}: ${describe(lastError)}`)
  return found
}

const describe = (err: unknown) => (err as NodeJS.ErrnoException | undefined)?.code ?? String(err)

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
    let lastError: unknown
    let found: Resolved | undefined
    for (const family of familyOrder(options)) {
      try {
        answers = await lookupFamily(host, family, options.dns_server, ctx.signal)
        found = { address: answers[0] ?? '', family }
        break
      } catch (err) {
        if (ctx.signal.aborted) throw err
        lastError = err
      }
    }
    if (!found) throw new Error(`cannot resolve ${host}: ${describe(lastError)}`)
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
