// Mail headers: parse a header block (unfolded), read our marker headers and the delivery time of Received:.

/** Header names (lower case) to their values, in order; folded lines are joined. */
export function parseHeaders(text: string): Map<string, string[]> {
  const headers = new Map<string, string[]>()
  const head = text.split(/\r?\n\r?\n/, 1)[0] ?? ''
  const lines = head.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i] ?? ''
    while (/^[ \t]/.test(lines[i + 1] ?? '')) line += ' ' + (lines[++i] ?? '').trim()
    const colon = line.indexOf(':')
    if (colon <= 0) continue
    const name = line.slice(0, colon).trim().toLowerCase()
    const list = headers.get(name) ?? []
    list.push(line.slice(colon + 1).trim())
    headers.set(name, list)
  }
  return headers
}

export const header = (headers: Map<string, string[]>, name: string) => headers.get(name.toLowerCase())?.[0]

/**
 * When the mailbox server stored the mail: the date of the topmost Received: header (the last hop, e.g.
 * Dovecot's LMTP delivery). Second resolution, from the server's clock.
 */
export function receivedAt(headers: Map<string, string[]>): number | undefined {
  const top = headers.get('received')?.[0]
  if (top === undefined) return undefined
  const date = top.slice(top.lastIndexOf(';') + 1).trim()
  const ms = Date.parse(date)
  return Number.isNaN(ms) ? undefined : ms
}
