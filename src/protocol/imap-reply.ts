// Small pure parsers for IMAP lines as imapflow logs them: tags, capability lists, RECENT, redaction.

/** A line the client sent: its tag and command verb; undefined for a continuation (a SASL response, DONE). */
export function clientCommand(line: string): { tag: string; verb: string } | undefined {
  // imapflow's tags are hex counters (1..9, A..F, 10...); a continuation has no "tag SP verb" shape
  const m = /^([0-9A-Za-z.]+) ([A-Za-z][A-Za-z0-9-]*)/.exec(line)
  if (!m) return undefined
  return { tag: m[1] ?? '', verb: (m[2] ?? '').toUpperCase() }
}

export interface ServerLine {
  /** '*' for untagged, '+' for a continuation request, else the tag of the command it completes. */
  tag: string
  /** OK, NO, BAD, BYE, PREAUTH, CAPABILITY, ... or, for "* 3 EXISTS", the number. */
  word: string
}

export function serverLine(line: string): ServerLine {
  const m = /^(\S+)(?: (\S+))?/.exec(line)
  return { tag: m?.[1] ?? '', word: (m?.[2] ?? '').toUpperCase() }
}

/** The capability atoms of "* CAPABILITY ..." or of a "[CAPABILITY ...]" response code; else undefined. */
export function capabilityList(line: string): string[] | undefined {
  const untagged = /^\* CAPABILITY (.*)$/i.exec(line)
  const code = untagged ? undefined : /\[CAPABILITY ([^\]]*)\]/i.exec(line)
  const text = untagged?.[1] ?? code?.[1]
  if (text === undefined) return undefined
  return text.split(' ').filter((atom) => atom !== '')
}

/** SASL mechanisms from AUTH= capabilities, upper-cased, in the server's order. */
export function authMechanisms(capabilities: readonly string[]): string[] {
  return capabilities.filter((c) => /^AUTH=/i.test(c)).map((c) => c.slice(5).toUpperCase())
}

/** Whether the list holds the capability (IMAP atoms are case-insensitive). */
export function hasCapability(capabilities: readonly string[], name: string): boolean {
  const wanted = name.toUpperCase()
  return capabilities.some((c) => c.toUpperCase() === wanted)
}

/** n from "* n RECENT" (the SELECT/EXAMINE response); else undefined. */
export function recentCount(line: string): number | undefined {
  const m = /^\* (\d+) RECENT$/i.exec(line.trimEnd())
  return m ? Number(m[1]) : undefined
}

/**
 * A client line for the debug log: LOGIN arguments and SASL payloads are replaced, as SMTP AUTH is.
 * imapflow already masks passwords, but its lines still carry the username (plain or in base64).
 */
export function redactClientLine(line: string): string {
  const auth = /^(\S+ (?:AUTHENTICATE \S+|LOGIN))( .*)?$/i.exec(line)
  if (auth) return auth[2] ? `${auth[1] ?? ''} <redacted>` : line
  if (clientCommand(line) || line === 'DONE') return line
  return '<redacted>'
}
