// The test mail: RFC 5322 text with a unique marker in a header and in the subject.
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'

/** Header that marks mail sent by this exporter; only mail carrying it is ever deleted. */
export const MARKER_HEADER = 'X-Mailprobe-Id'

export interface ProbeMessage {
  id: string
  messageId: string
  text: string
}

const headerSafe = (value: string) => value.replace(/[\r\n]+/g, ' ')

export function buildMessage(options: {
  from: string
  to: readonly string[]
  subject: string
  headers: Record<string, string>
  body: string
  /** Extra marker headers (a round trip's module and send time). */
  marker?: Record<string, string>
  id?: string
  date?: Date
}): ProbeMessage {
  const id = options.id ?? randomUUID()
  const domain = /@([^>\s]+)>?$/.exec(options.from)?.[1] ?? hostname()
  const messageId = `<${id}@${domain}>`
  const headers: [string, string][] = [
    ['From', options.from],
    ['To', options.to.join(', ')],
    // The id also goes in the subject: some servers' SEARCH tokenises words and finds it there.
    ['Subject', `${options.subject} ${id}`],
    ['Date', (options.date ?? new Date()).toUTCString().replace('GMT', '+0000')],
    ['Message-ID', messageId],
    [MARKER_HEADER, id],
    ...Object.entries(options.marker ?? {}),
    ['MIME-Version', '1.0'],
    ['Content-Type', 'text/plain; charset=utf-8'],
    ['Content-Transfer-Encoding', '8bit'],
    ...Object.entries(options.headers),
  ]
  const head = headers.map(([k, v]) => `${k}: ${headerSafe(v)}`).join('\r\n')
  const body = options.body.replace(/\r?\n/g, '\r\n')
  return { id, messageId, text: `${head}\r\n\r\n${body}` }
}
