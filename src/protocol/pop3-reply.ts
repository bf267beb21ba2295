// POP3 reply parsers: status lines, CAPA, STAT, UIDL/LIST lines, the APOP timestamp. Pure, tested with strings.

/** A POP3 status line: `+OK text`, `-ERR text`, or a SASL continuation `+ challenge` (RFC 5034). */
export type Pop3Status =
  { kind: 'ok'; text: string } | { kind: 'err'; text: string } | { kind: 'continue'; text: string }

/** Classifies one status line; undefined when it is none of the three. */
export function parseStatus(line: string): Pop3Status | undefined {
  // Status indicators are case-sensitive in RFC 1939, but lower-case ones exist in the wild; they cost nothing.
  const m = /^(\+OK|-ERR)(?:[ \t](.*)|)$/i.exec(line)
  if (m) return { kind: m[1]?.toUpperCase() === '+OK' ? 'ok' : 'err', text: (m[2] ?? '').trim() }
  // "+" alone is an empty challenge; "+ " followed by base64 is the usual form.
  if (line === '+' || line.startsWith('+ ')) return { kind: 'continue', text: line.slice(1).trim() }
  return undefined
}

/** The response code of a reply text (RFC 2449 8: `[IN-USE]`, `[SYS/TEMP]`, `[AUTH]`), if any. */
export function responseCode(text: string): string | undefined {
  return /^\[([^\]\s]+)\]/.exec(text)?.[1]?.toUpperCase()
}

/** CAPA keywords (upper-cased) and their arguments, in the order the server listed them. */
export type Capabilities = ReadonlyMap<string, readonly string[]>

/** Parses the lines of a CAPA reply (without the status line and the terminating "."). */
export function parseCapa(lines: readonly string[]): Capabilities {
  const capabilities = new Map<string, string[]>()
  for (const line of lines) {
    const [keyword, ...args] = line.trim().split(/\s+/)
    if (keyword === undefined || keyword === '') continue
    capabilities.set(keyword.toUpperCase(), args)
  }
  return capabilities
}

/** The SASL mechanisms of a CAPA reply (upper-cased), empty when there is no SASL line. */
export function saslMechanisms(capabilities: Capabilities): string[] {
  return (capabilities.get('SASL') ?? []).map((m) => m.toUpperCase())
}

/** The text of a `+OK nn mm` STAT reply: message count and maildrop size in octets. */
export function parseStat(text: string): { messages: number; size: number } | undefined {
  const m = /^(\d+)\s+(\d+)(?:\s|$)/.exec(text)
  if (!m) return undefined
  return { messages: Number(m[1]), size: Number(m[2]) }
}

/** One line of a LIST reply: `msg size`. */
export function parseListLine(line: string): { id: number; size: number } | undefined {
  const m = /^(\d+)\s+(\d+)(?:\s|$)/.exec(line.trim())
  if (!m) return undefined
  return { id: Number(m[1]), size: Number(m[2]) }
}

/** One line of a UIDL reply: `msg unique-id` (the id is 1-70 printable characters, RFC 1939 7). */
export function parseUidlLine(line: string): { id: number; uid: string } | undefined {
  const m = /^(\d+)\s+([\x21-\x7e]{1,70})$/.exec(line.trim())
  if (!m) return undefined
  return { id: Number(m[1]), uid: m[2] ?? '' }
}

/**
 * The APOP timestamp of a greeting (RFC 1939 7): the `<...@...>` msg-id, angle brackets included,
 * since the digest is md5 over exactly those bytes followed by the secret.
 */
export function apopTimestamp(greeting: string): string | undefined {
  return /<[^<>\s@]+@[^<>\s]+>/.exec(greeting)?.[0]
}
