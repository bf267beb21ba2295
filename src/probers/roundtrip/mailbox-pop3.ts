// The POP3 receiving leg: the maildrop is a snapshot taken at login, so it polls by logging in again,
// scans the newest messages with TOP n 0 for our marker, and deletes exactly our mails (DELE + QUIT).
import type { Pop3Settings } from '../../settings.ts'
import type { RoundtripSettings } from './settings.ts'
import type { ProbeContext } from '../../prober.ts'
import { openPop3, pop3PhaseTimer, recordStat } from '../../dialogues/pop3.ts'
import type { Target } from '../../targets.ts'
import { sleep } from '../../protocol/abort.ts'
import { header, parseHeaders, receivedAt } from '../../protocol/headers.ts'
import { MARKER_HEADER, isStale, lookDelays, markerOf, type FoundMail, type Mailbox } from './mailbox.ts'
import type { Pop3Client } from '../../protocol/pop3-client.ts'

interface Scanned {
  number: number
  headers: Map<string, string[]>
}

export async function openPop3Mailbox(
  target: Target,
  settings: Pop3Settings,
  roundtrip: RoundtripSettings,
  ctx: ProbeContext,
  module: string,
): Promise<Mailbox> {
  const labels = { leg: 'receive' }
  const phase = pop3PhaseTimer(ctx, labels) // reconnects add up in the same phases
  let client: Pop3Client | undefined
  let messages: number | undefined
  /** Marker headers of the messages scanned in the current session, by our id. */
  let scanned = new Map<string, Scanned>()
  let others: Scanned[] = []

  /** A new session: log in, STAT, and read the newest messages' headers (TOP n 0), newest first. */
  const scan = async () => {
    client?.close()
    client = undefined
    const session = await openPop3(target, settings, ctx, labels, phase)
    client = session.client
    const open = session.client
    const stat = await phase('stat', () => open.stat())
    recordStat(ctx, stat, labels)
    messages = stat.messages
    scanned = new Map()
    others = []
    const oldest = Math.max(1, stat.messages - roundtrip.scan_limit + 1)
    for (let n = stat.messages; n >= oldest; n--) {
      const headers = parseHeaders(await open.top(n, 0))
      const id = header(headers, MARKER_HEADER)
      if (id === undefined) continue // not ours: never touched
      if (scanned.has(id)) others.push({ number: n, headers })
      else scanned.set(id, { number: n, headers })
    }
  }

  // Log in once before anything is sent: a receive leg that cannot log in fails before a mail is wasted.
  await scan()
  let fresh = true

  return {
    get messages() {
      return messages
    },

    async find(ids, { until, wait }) {
      const nextWait = lookDelays(roundtrip.poll_interval)
      for (;;) {
        if (!fresh) await scan()
        fresh = false
        const hits = ids.filter((id) => scanned.has(id))
        if (hits.length === ids.length || !wait || Date.now() >= until)
          return hits.map((id): FoundMail => ({ id, folder: 'inbox', detectedAt: Date.now() }))
        await client?.quit()
        client = undefined
        await sleep(Math.max(0, Math.min(nextWait(), until - Date.now())), ctx.signal)
      }
    },

    async details(mail) {
      const entry = scanned.get(mail.id)
      if (!entry || !client) return
      // POP3 has no arrival time of its own: the topmost Received: header is the mailbox server's delivery stamp.
      mail.storedAt ??= receivedAt(parseHeaders(await client.top(entry.number, 0)))
    },

    async cleanup(found, { staleBefore, keep }) {
      if (!client) await scan()
      const open = client
      if (!open) return 0
      const ours = found.flatMap((m) => {
        const entry = scanned.get(m.id)
        return entry ? [entry.number] : []
      })
      const stale = [...scanned.values(), ...others]
        .filter(({ headers }) => isStale(markerOf(headers), module, staleBefore, keep))
        .map((s) => s.number)
        .filter((n) => !ours.includes(n))
      for (const n of [...ours, ...stale]) await open.dele(n)
      await open.quit() // DELE takes effect only when QUIT ends the session (UPDATE state)
      client = undefined
      return stale.length
    },

    close() {
      client?.close()
      client = undefined
    },
  }
}
