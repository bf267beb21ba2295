// The IMAP receiving leg: IDLE (or NOOP polling) on the inbox, SEARCH by our header with a header-scan
// fallback, the junk folder, and deletion of exactly our mails by UID.
import type { ImapFlow, ListResponse } from 'imapflow'
import type { ImapSettings } from '../../settings.ts'
import type { RoundtripSettings } from './settings.ts'
import type { ProbeContext } from '../../prober.ts'
import { openImap } from '../../dialogues/imap.ts'
import type { Target } from '../../targets.ts'
import { sleep } from '../../protocol/abort.ts'
import { uidExpunge } from '../../protocol/imap-session.ts'
import { header, parseHeaders } from '../../protocol/headers.ts'
import {
  MARKER_HEADER,
  MODULE_HEADER,
  SENT_HEADER,
  isStale,
  lookDelays,
  markerOf,
  uidSets,
  type FoundMail,
  type Mailbox,
} from './mailbox.ts'

const HEADER_FIELDS = [MARKER_HEADER, MODULE_HEADER, SENT_HEADER].map((h) => h.toLowerCase())

interface Hit extends FoundMail {
  uid: number
}

export async function openImapMailbox(
  target: Target,
  settings: ImapSettings,
  roundtrip: RoundtripSettings,
  ctx: ProbeContext,
  module: string,
): Promise<Mailbox> {
  const { client, session } = await openImap(target, settings, ctx, { leg: 'receive' })
  const { logger } = ctx
  const inbox = settings.mailbox
  const canIdle = client.capabilities.has('IDLE')
  const hasUidplus = client.capabilities.has('UIDPLUS')
  let junk: string | undefined
  let current: string | undefined
  /** When the server last reported a new message count (IDLE push or any command's response). */
  let changedAt: number | undefined
  client.on('exists', (info: { path: string }) => {
    if (info.path === inbox) changedAt = Date.now()
  })

  /** Inbox message count when last seen (the client forgets it at LOGOUT). */
  let inboxMessages: number | undefined
  const open = async (path: string) => {
    if (current === path) return
    const box = await session.call(() => client.mailboxOpen(path)) // SELECT (read-write): we may delete our own mail
    current = path
    if (path === inbox) inboxMessages = box.exists
  }

  try {
    await session.during('select', async () => {
      const folders = await session.call(() => client.list())
      junk = findJunk(folders, roundtrip.junk_folders, inbox)
      await open(inbox)
    })
  } catch (err) {
    session.close()
    throw err
  }
  logger.debug('receive leg ready', { idle: canIdle, uidplus: hasUidplus, junk: junk ?? 'none' })

  /** Per folder: the highest UID whose headers were scanned (a scan reads only newer messages), and the count then. */
  const scannedUid = new Map<string, number>()
  const scannedCount = new Map<string, number>()

  /** Our mails among `ids` in the open folder: SEARCH HEADER, and a scan of new messages' headers when SEARCH misses. */
  const look = async (ids: readonly string[], folder: FoundMail['folder']): Promise<Hit[]> => {
    const hits: Hit[] = []
    for (const id of ids) {
      // \Deleted mail included: only ids in flight are looked for, and each is settled once, so a mail
      // flagged by someone else (or by an overlapping scrape) is still a delivered mail, not a lost one.
      const uids = await session.call(() =>
        client.search({ header: { [MARKER_HEADER.toLowerCase()]: id } }, { uid: true }),
      )
      if (!Array.isArray(uids) || uids.length === 0) continue
      // SEARCH may match loosely (tokenising servers; a bounce quoting our headers is the user's mail):
      // only a message whose own marker header is exactly our id counts.
      const messages = await fetchHeaders(client, session.call.bind(session), uids)
      const exact = messages.find(
        (m) => header(parseHeaders(m.headers?.toString('utf8') ?? ''), MARKER_HEADER) === id,
      )
      if (exact) hits.push({ id, uid: exact.uid, folder, detectedAt: Date.now() })
    }
    const missing = ids.filter((id) => !hits.some((h) => h.id === id))
    const box = client.mailbox
    const last = scannedUid.get(folder) ?? 0
    // New messages since the last scan: the count grew (imapflow's uidNext only changes on SELECT).
    if (missing.length > 0 && box && box.exists > (scannedCount.get(folder) ?? 0)) {
      // Some servers index headers late (or not at all): read the marker headers of messages new since the
      // last scan, at most scan_limit of the newest.
      const range = last > 0 ? `${last + 1}:*` : `${Math.max(1, box.exists - roundtrip.scan_limit + 1)}:*`
      const messages = await session.call(() =>
        client.fetchAll(range, { uid: true, headers: HEADER_FIELDS }, { uid: last > 0 }),
      )
      scannedUid.set(folder, Math.max(last, ...messages.map((m) => m.uid)))
      scannedCount.set(folder, box.exists)
      for (const m of messages) {
        const id = header(parseHeaders(m.headers?.toString('utf8') ?? ''), MARKER_HEADER)
        if (id !== undefined && missing.includes(id) && !hits.some((h) => h.id === id))
          hits.push({ id, uid: m.uid, folder, detectedAt: Date.now() })
      }
    }
    return hits
  }

  const lookInJunk = async (ids: readonly string[]): Promise<Hit[]> => {
    if (junk === undefined || ids.length === 0) return []
    await open(junk)
    try {
      return await look(ids, 'junk')
    } finally {
      await open(inbox)
    }
  }

  /** Until something changes in the inbox, `waitMs` passes or `until`: IDLE when the server can, else NOOP. */
  const waitForChange = async (waitMs: number, until: number, since: number) => {
    const wait = Math.max(0, Math.min(waitMs, until - Date.now()))
    if (changedAt !== undefined && changedAt > since) return
    if (!canIdle) {
      await sleep(wait, ctx.signal)
      await session.call(() => client.noop()) // NOOP makes the server report new EXISTS
      return
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, wait)
      function done() {
        clearTimeout(timer)
        client.off('exists', done)
        ctx.signal.removeEventListener('abort', done)
        resolve()
      }
      client.on('exists', done)
      ctx.signal.addEventListener('abort', done, { once: true })
      // idle() resolves only when IDLE ends; the next command ends it (imapflow sends DONE first).
      client.idle().catch(() => undefined)
    })
  }

  const found = new Map<string, Hit>()
  return {
    get messages() {
      const box = client.mailbox
      if (box && box.path === inbox) inboxMessages = box.exists
      return inboxMessages
    },

    async find(ids, { until, wait }) {
      let pending = [...ids]
      const nextWait = lookDelays(roundtrip.poll_interval)
      let junkCheckedAt = 0
      for (let round = 0; ; round++) {
        const since = Date.now()
        const hits = [...(await look(pending, 'inbox'))]
        pending = pending.filter((id) => !hits.some((h) => h.id === id))
        // The inbox on every round; the junk folder (two SELECTs away) when looking once, else once per poll_interval.
        const junkDue = !wait || (round > 0 && since - junkCheckedAt >= roundtrip.poll_interval * 1000)
        if (pending.length > 0 && junkDue) {
          junkCheckedAt = since
          hits.push(...(await lookInJunk(pending)))
        }
        for (const hit of hits) found.set(hit.id, hit)
        pending = pending.filter((id) => !found.has(id))
        if (pending.length === 0 || !wait || Date.now() >= until) break
        await waitForChange(nextWait(), until, since)
      }
      return ids.flatMap((id) => {
        const hit = found.get(id)
        return hit ? [hit] : []
      })
    },

    async details(mail) {
      const hit = found.get(mail.id)
      if (!hit) return
      await open(hit.folder === 'junk' && junk !== undefined ? junk : inbox)
      const message = await session.call(() =>
        client.fetchOne(String(hit.uid), { internalDate: true }, { uid: true }),
      )
      // INTERNALDATE: when the server stored the message, by its clock (whole seconds on most servers).
      const internal = message ? message.internalDate : undefined
      const stamp =
        internal instanceof Date
          ? internal.getTime()
          : typeof internal === 'string'
            ? Date.parse(internal)
            : NaN
      mail.storedAt ??= Number.isNaN(stamp) ? undefined : stamp
      await open(inbox)
    },

    async cleanup(mails, { staleBefore, keep }) {
      let swept = 0
      for (const [folder, path] of [
        ['inbox', inbox],
        ['junk', junk],
      ] as const) {
        if (path === undefined) continue
        await open(path)
        const uids = mails.flatMap((m) => {
          const hit = found.get(m.id)
          return hit && hit.folder === folder ? [hit.uid] : []
        })
        const stale = await staleUids(client, session.call.bind(session), module, staleBefore, keep)
        swept += stale.filter((uid) => !uids.includes(uid)).length
        await remove(client, session.call.bind(session), [...new Set([...uids, ...stale])], hasUidplus, ctx)
      }
      await session.call(() => client.logout())
      return swept
    },

    close() {
      session.close()
    },
  }
}

/** The \Junk special-use folder (RFC 6154), else the first configured name that exists. */
function findJunk(
  folders: readonly ListResponse[],
  names: readonly string[],
  inbox: string,
): string | undefined {
  const special = folders.find((f) => f.specialUse === '\\Junk')
  if (special) return special.path
  const lower = names.map((n) => n.toLowerCase())
  return folders.find(
    (f) => f.path !== inbox && (lower.includes(f.path.toLowerCase()) || lower.includes(f.name.toLowerCase())),
  )?.path
}

type Call = <T>(step: () => Promise<T>) => Promise<T>

/** UIDs of this module's probe mails sent before `before` in the open folder, checked header by header. */
async function staleUids(
  client: ImapFlow,
  call: Call,
  module: string,
  before: number,
  keep: readonly string[],
) {
  // UNDELETED: without UIDPLUS swept mails stay, flagged \Deleted; found again, they would be counted (and
  // their UIDs sent) on every scrape.
  const candidates = await call(() =>
    client.search({ header: { [MODULE_HEADER.toLowerCase()]: module }, deleted: false }, { uid: true }),
  )
  if (!Array.isArray(candidates) || candidates.length === 0) return []
  const messages = await fetchHeaders(client, call, candidates)
  return messages
    .filter((m) => {
      const h = parseHeaders(m.headers?.toString('utf8') ?? '')
      // SEARCH matches substrings: the exact module name is checked here.
      return isStale(markerOf(h), module, before, keep)
    })
    .map((m) => m.uid)
}

/**
 * Deletes by UID only. With UIDPLUS: UID STORE \Deleted + UID EXPUNGE of exactly these UIDs. Without it,
 * the mails are only flagged: a bare EXPUNGE would also remove the user's other \Deleted mail.
 */
async function remove(
  client: ImapFlow,
  call: Call,
  uids: readonly number[],
  uidplus: boolean,
  ctx: ProbeContext,
) {
  if (uids.length === 0) return
  for (const range of uidSets(uids)) {
    await call(() => client.messageFlagsAdd(range, ['\\Deleted'], { uid: true }))
    if (uidplus) await call(() => uidExpunge(client, range))
    else
      ctx.logger.warn('server lacks UIDPLUS: probe mails flagged \\Deleted but not expunged', { uids: range })
  }
}

/** Our marker headers of these UIDs, in commands of bounded length. */
async function fetchHeaders(client: ImapFlow, call: Call, uids: readonly number[]) {
  const messages = []
  for (const range of uidSets(uids))
    messages.push(
      ...(await call(() => client.fetchAll(range, { uid: true, headers: HEADER_FIELDS }, { uid: true }))),
    )
  return messages
}
