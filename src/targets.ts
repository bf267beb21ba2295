// Targets: parse "host[:port]" strictly and match a target against a module's allowed_targets.
import { BlockList, isIP } from 'node:net'

export interface Target {
  /** Host name (lower case, no trailing dot) or IP literal, without brackets. */
  host: string
  port: number
  /**
   * The name the server is checked against instead of `host` (SNI and certificate verification; a
   * module's tls_config.server_name still wins): a mail exchanger's name while probing one of its
   * addresses, or the request's `hostname` parameter.
   */
  serverName?: string | undefined
}

/** A domain whose mail exchangers are probed (`mx:example.com`, `mx:example.com:2525`). */
export interface MxTarget {
  /** The domain, lower case, no trailing dot. */
  mx: string
  port: number
}

/** What a probe is aimed at: one host, or a domain's mail exchangers. */
export type ProbeTarget = Target | MxTarget

export const isMxTarget = (target: ProbeTarget): target is MxTarget => 'mx' in target

/** The name TLS checks the server against: the server name when there is one, else the host. */
export const tlsName = (target: Target): string => target.serverName ?? target.host

/**
 * Text for a message: JSON-quoted, with everything outside printable ASCII escaped (JSON.stringify
 * leaves U+2028, U+0085 and friends alone, and some log viewers break lines on them), and cut short so
 * that a long query string cannot make a long log line.
 */
export function quote(text: string): string {
  const short = text.length > 100 ? `${text.slice(0, 100)}...` : text
  return JSON.stringify(short).replace(
    /[^\x20-\x7e]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  )
}

const PORT = /^[1-9]\d{0,4}$/

/** A zone id (`%lo`) for the message, shown only when it is plain text. */
function zoneReason(text: string): string {
  const zone = /%[A-Za-z0-9_.-]{0,20}(?![A-Za-z0-9_.-])/.exec(text)?.[0]
  return `zone ids (${zone ?? '%...'}) are not supported`
}

/** Why `host` is neither an IPv4 literal nor a DNS name, or undefined when it is one of them. */
function hostProblem(host: string): string | undefined {
  if (host === '') return 'the host is empty'
  if (isIP(host) === 4) return undefined
  const bad = /[^A-Za-z0-9_.-]/.exec(host)?.[0]
  if (bad !== undefined)
    return `${quote(bad)} cannot be in a host name (letters, digits, hyphen, underscore and dots)`
  const name = host.endsWith('.') ? host.slice(0, -1) : host
  if (name.length > 253) return 'a host name is at most 253 characters'
  const labels = name.split('.')
  if (labels.some((l) => l === '')) return 'a host name has no empty labels (..)'
  if (labels.some((l) => l.length > 63)) return 'a label of a host name is at most 63 characters'
  if (labels.some((l) => l.startsWith('-') || l.endsWith('-')))
    return 'a label of a host name cannot start or end with a hyphen'
  // The resolver reads 127.1, 0x7f.1 or 010.0.0.1 as IP addresses (inet_aton), so such a "name"
  // would dodge host and network rules alike. No top-level domain is numeric (RFC 3696 2).
  const last = labels[labels.length - 1] ?? ''
  if (/^(\d+|0x[0-9a-f]*)$/i.test(last)) return 'not an IPv4 address (four numbers 0-255) nor a host name'
  return undefined
}

/**
 * Splits a target into host and port text: exactly `host`, `host:port`, `[ipv6]` or `[ipv6]:port`,
 * where host is an IPv4 literal or a DNS name. Returns the reason when it is none of these.
 */
export function splitTarget(text: string): { host: string; portText?: string } | string {
  if (text === '') return 'it is empty (host, host:port, [ipv6] or [ipv6]:port)'
  if (/[\s\p{C}]/u.test(text)) return 'it contains whitespace or control characters'
  if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(text)) return 'a target is host or host:port, not a URL'
  let host: string
  let portText: string | undefined
  if (text.startsWith('[')) {
    const bracket = /^\[([^\]]*)\](?::(.*))?$/.exec(text)
    if (!bracket) return 'expected [ipv6] or [ipv6]:port'
    host = bracket[1] ?? ''
    portText = bracket[2]
    if (host.includes('%')) return zoneReason(host)
    if (isIP(host) === 4 || hostProblem(host) === undefined) return 'brackets are for IPv6 addresses only'
    if (isIP(host) !== 6) return `${quote(host)} is not an IPv6 address`
  } else {
    const colons = text.split(':').length - 1
    if (colons > 1) {
      if (text.includes('%')) return zoneReason(text)
      const last = text.lastIndexOf(':')
      const asPort = isIP(text.slice(0, last)) === 6 && PORT.test(text.slice(last + 1))
      const suggestions = [
        ...(asPort ? [`[${text.slice(0, last)}]:${text.slice(last + 1)}`] : []),
        ...(isIP(text) === 6 ? [`[${text}]`] : []),
      ]
      return suggestions.length > 0
        ? `IPv6 addresses go in brackets: ${suggestions.join(' or ')}`
        : 'expected host, host:port, [ipv6] or [ipv6]:port'
    }
    const colon = text.indexOf(':')
    host = colon < 0 ? text : text.slice(0, colon)
    portText = colon < 0 ? undefined : text.slice(colon + 1)
    const problem = hostProblem(host)
    if (problem !== undefined) return problem
  }
  if (portText !== undefined && (!PORT.test(portText) || Number(portText) > 65535))
    return 'port must be 1-65535'
  return portText === undefined ? { host } : { host, portText }
}

/** Parses a target (see splitTarget); a missing port is `defaultPort`. Host names are lower-cased. */
export function parseTarget(text: string, defaultPort: number): Target | string {
  const split = splitTarget(text)
  if (typeof split === 'string') return `${quote(text)} is not a valid target: ${split}`
  const port = split.portText === undefined ? defaultPort : Number(split.portText)
  return { host: canonicalHost(split.host), port }
}

const MX_PREFIX = /^mx:/i

/** parseTarget, and `mx:domain[:port]` for a domain's mail exchangers (a domain name, not an address). */
export function parseProbeTarget(text: string, defaultPort: number): ProbeTarget | string {
  if (!MX_PREFIX.test(text)) return parseTarget(text, defaultPort)
  const rest = text.slice(3)
  const split = splitTarget(rest)
  if (typeof split === 'string') return `${quote(text)} is not a valid target: ${split}`
  if (isIP(split.host) !== 0)
    return `${quote(text)} is not a valid target: mx: takes a domain, not an address`
  const port = split.portText === undefined ? defaultPort : Number(split.portText)
  return { mx: canonicalHost(split.host), port }
}

/** A host name for SNI and certificate checks (the `hostname` parameter), or why it is not one. */
export function parseServerName(text: string): string | { problem: string } {
  const problem = isIP(text) !== 0 ? 'an address is not a server name' : hostProblem(text)
  if (problem !== undefined) return { problem: `${quote(text)} is not a host name: ${problem}` }
  return canonicalHost(text)
}

/** A target as it is written in a config or a URL: host:port, [ipv6]:port, mx:domain:port. */
export function formatTarget(target: ProbeTarget): string {
  if (isMxTarget(target)) return `mx:${target.mx}:${target.port}`
  return isIP(target.host) === 6 ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`
}

/** Lower case without the trailing dot; IPv6 in its canonical form, so rules match however it is written. */
function canonicalHost(host: string): string {
  if (isIP(host) === 6) return new URL(`http://[${host}]/`).hostname.slice(1, -1)
  return host.toLowerCase().replace(/\.$/, '')
}

export type TargetRule =
  | { kind: 'host'; text: string; host: string; port?: number }
  | { kind: 'domain'; text: string; suffix: string }
  | { kind: 'network'; text: string; list: BlockList }

/** One allowed_targets entry, or a message saying why it is not one. */
export function parseTargetRule(text: string): TargetRule | string {
  const cidr = /^(.+)\/(\d{1,3})$/.exec(text)
  if (cidr) {
    const [, address = '', bitsText = ''] = cidr
    const family = address.includes('%') ? 0 : isIP(address)
    const bits = Number(bitsText)
    if (family === 0 || bits > (family === 4 ? 32 : 128))
      return `${quote(text)} is not a valid network (CIDR)`
    const list = new BlockList()
    list.addSubnet(address, bits, family === 4 ? 'ipv4' : 'ipv6')
    return withJson({ kind: 'network', text, list })
  }
  if (text.startsWith('.')) {
    const suffix = text.toLowerCase()
    if (!/^(\.[a-z0-9_-]+)+\.?$/.test(suffix)) return `${quote(text)} is not a valid domain (.example.com)`
    return withJson({ kind: 'domain', text, suffix: suffix.replace(/\.$/, '') })
  }
  const split = splitTarget(text)
  if (typeof split === 'string') return `${quote(text)} is not a valid target rule: ${split}`
  const host = canonicalHost(split.host)
  return withJson(
    split.portText === undefined
      ? { kind: 'host', text, host }
      : { kind: 'host', text, host, port: Number(split.portText) },
  )
}

function withJson<R extends TargetRule>(rule: R): R {
  return Object.defineProperty(rule, 'toJSON', { value: () => rule.text, enumerable: false })
}

/** Whether a parsed target is allowed by any rule. Names match host and domain rules, IP literals match networks too. */
export function targetAllowed(target: Target, rules: readonly TargetRule[]): boolean {
  const family = isIP(target.host)
  return rules.some((rule) => {
    switch (rule.kind) {
      case 'host':
        return rule.host === target.host && (rule.port === undefined || rule.port === target.port)
      case 'domain':
        return family === 0 && target.host.endsWith(rule.suffix)
      case 'network':
        return family !== 0 && rule.list.check(target.host, family === 4 ? 'ipv4' : 'ipv6')
    }
  })
}
