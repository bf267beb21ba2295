// The receiving leg of a round trip, whatever the protocol: find our marked mails, read when they arrived, delete them.
import { header } from '../../protocol/headers.ts'
import { MARKER_HEADER } from '../../protocol/message.ts'

/** Header naming the module that sent a probe mail: a module sweeps only its own stale mails. */
export const MODULE_HEADER = 'X-Mailprobe-Module'
/** Header with the time the mail was sent (ms since epoch), for sweeping by age. */
export const SENT_HEADER = 'X-Mailprobe-Sent'
export { MARKER_HEADER }

const FIRST_LOOK_MS = 10

/**
 * The waits between looks for a mail: the first after 10 ms, each twice the one before, up to
 * poll_interval. Waiting for the server to tell is not enough: Dovecot announces a new message about
 * 0.5 s after storing it (it batches changes), and a POP3 maildrop is a snapshot taken at login, so a
 * mail delivered in 10 ms would be seen 0.5 s or a whole poll_interval late. Looking again early finds
 * fast deliveries fast and backs off for slow ones; for POP3, where each look is a new login, that is
 * at most 7 logins in the first 1.3 s, then one per poll_interval.
 */
export function lookDelays(pollIntervalSeconds: number): () => number {
  const max = pollIntervalSeconds * 1000
  let next = Math.min(FIRST_LOOK_MS, max)
  return () => {
    const wait = next
    next = Math.min(next * 2, max)
    return wait
  }
}

export interface FoundMail {
  id: string
  folder: 'inbox' | 'junk'
  /** When we saw it (ms since epoch). */
  detectedAt: number
  /** When the server stored it (ms since epoch), by the server's own stamp: IMAP INTERNALDATE or Received:. */
  storedAt?: number | undefined
}

export interface Mailbox {
  /** Messages in the inbox when last looked at. */
  readonly messages: number | undefined
  /** Looks for these ids: once, or (wait) until all are found or `until` (ms since epoch) passes. */
  find(ids: readonly string[], options: { until: number; wait: boolean }): Promise<FoundMail[]>
  /** Reads the found mail's arrival time (sets storedAt when it was not known yet). */
  details(mail: FoundMail): Promise<void>
  /**
   * Deletes exactly the found mails, plus this module's own marked mails sent before `staleBefore`
   * (except `keep`); nothing without our marker is ever touched. Ends the session. Returns how many stale mails went.
   */
  cleanup(
    found: readonly FoundMail[],
    options: { staleBefore: number; keep: readonly string[] },
  ): Promise<number>
  /** Drops the connection without further commands (errors, the deadline). */
  close(): void
}

/** Our marker headers of a parsed header block (each undefined when absent). */
export function markerOf(headers: Map<string, string[]>) {
  return {
    id: header(headers, MARKER_HEADER),
    module: header(headers, MODULE_HEADER),
    sent: header(headers, SENT_HEADER),
  }
}

/** Whether marker headers say: a probe mail of `module`, sent before `before`, not one to keep. */
export function isStale(
  marker: { id?: string | undefined; module?: string | undefined; sent?: string | undefined },
  module: string,
  before: number,
  keep: readonly string[],
): boolean {
  if (marker.id === undefined || marker.module !== module || keep.includes(marker.id)) return false
  // Only a plain number is a send time: an empty or garbled header is unknown age, never stale.
  if (marker.sent === undefined || !/^\d+$/.test(marker.sent.trim())) return false
  return Number(marker.sent) < before
}

/**
 * UIDs as IMAP sets ("3:7,9"), runs of consecutive UIDs compacted, each set at most `maxLength` characters,
 * so that no command outgrows a server's line limit (RFC 7162 §4 suggests 8192 octets). A run a:b stands for
 * exactly the UIDs a..b, all of them in the list: nothing else is ever named.
 */
export function uidSets(uids: readonly number[], maxLength = 1000): string[] {
  const sorted = [...new Set(uids)].sort((a, b) => a - b)
  const parts: string[] = []
  for (let i = 0; i < sorted.length;) {
    const start = sorted[i] ?? 0
    let end = start
    while (sorted[i + 1] === end + 1) end = sorted[++i] ?? end
    i++
    parts.push(end === start ? String(start) : `${String(start)}:${String(end)}`)
  }
  const sets: string[] = []
  let current = ''
  for (const part of parts) {
    if (current !== '' && current.length + 1 + part.length > maxLength) {
      sets.push(current)
      current = ''
    }
    current = current === '' ? part : `${current},${part}`
  }
  if (current !== '') sets.push(current)
  return sets
}
