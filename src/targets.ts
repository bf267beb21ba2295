// Targets: parse "host[:port]" and match a target against a module's allowed_targets.
import { BlockList, isIP } from 'node:net'

export interface Target {
  /** Host name or IP literal, without brackets. */
  host: string
  port: number
}

/** Parses host, host:port, [v6] or [v6]:port; a bare IPv6 literal has no port. */
export function parseTarget(text: string, defaultPort: number): Target | string {
  const trimmed = text.trim()
  let host = trimmed
  let portText: string | undefined
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(trimmed)
  if (bracket) {
    host = bracket[1] ?? ''
    portText = bracket[2]
  } else if (isIP(trimmed) !== 6) {
    const colon = trimmed.lastIndexOf(':')
    if (colon >= 0) {
      host = trimmed.slice(0, colon)
      portText = trimmed.slice(colon + 1)
    }
  }
  if (host === '' || /[\s/@]/.test(host) || (isIP(host) === 0 && !/^[A-Za-z0-9_.-]+$/.test(host)))
    return `"${text}" is not a host or host:port`
  const port = portText === undefined ? defaultPort : Number(portText)
  if (
    !Number.isInteger(port) ||
    port < 1 ||
    port > 65535 ||
    (portText !== undefined && !/^\d+$/.test(portText))
  )
    return `"${text}" has no valid port (1-65535)`
  return { host: host.toLowerCase().replace(/\.$/, ''), port }
}

export type TargetRule =
  | { kind: 'host'; text: string; host: string; port?: number }
  | { kind: 'domain'; text: string; suffix: string }
  | { kind: 'network'; text: string; list: BlockList }

/** One allowed_targets entry, or a message saying why it is not one. */
export function parseTargetRule(text: string): TargetRule | string {
  const rule = text.trim()
  const cidr = /^(.+)\/(\d{1,3})$/.exec(rule)
  if (cidr) {
    const [, address = '', bitsText = ''] = cidr
    const family = isIP(address)
    const bits = Number(bitsText)
    if (family === 0 || bits > (family === 4 ? 32 : 128)) return `"${text}" is not a valid network (CIDR)`
    const list = new BlockList()
    list.addSubnet(address, bits, family === 4 ? 'ipv4' : 'ipv6')
    return withJson({ kind: 'network', text, list })
  }
  if (rule.startsWith('.')) {
    const suffix = rule.toLowerCase()
    if (!/^(\.[a-z0-9_-]+)+\.?$/.test(suffix)) return `"${text}" is not a valid domain (.example.com)`
    return withJson({ kind: 'domain', text, suffix: suffix.replace(/\.$/, '') })
  }
  const hasPort = /^\[.*\]:\d+$/.test(rule) || (isIP(rule) !== 6 && rule.includes(':'))
  const target = parseTarget(rule, 1) // the port is ignored unless the rule gives one
  if (typeof target === 'string') return `"${text}": ${target}`
  return withJson(
    hasPort
      ? { kind: 'host', text, host: target.host, port: target.port }
      : { kind: 'host', text, host: target.host },
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
