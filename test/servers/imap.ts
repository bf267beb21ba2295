// A scripted IMAP server for in-process tests: well-behaved by default, any phase's answer replaceable, and with
// a MailStore a small stateful mailbox (SELECT, UID SEARCH HEADER, FETCH, STORE, EXPUNGE, NOOP, IDLE) that a
// scripted SMTP server can deliver into.
import { certs } from './certs.ts'
import type { ScriptConnection } from './scripted.ts'

export interface ImapFaults {
  /** Replaces the greeting; the default carries no capabilities, so the client asks with CAPABILITY. */
  greeting?: string
  /** Capabilities before TLS and under TLS. */
  caps?: string
  capsTls?: string
  /** Tagged answer to STARTTLS instead of OK, or 'drop' to close instead of the handshake. */
  starttls?: string
  cert?: { cert: Buffer; key: Buffer }
  /** Tagged answer to the login (AUTHENTICATE <mech> or LOGIN, keyed by mechanism or '*') instead of OK. */
  login?: Record<string, string>
  examine?: string
  status?: string
  /** A command verb the server never answers. */
  hang?: string
  /** Sent (then the server closes) instead of answering EXAMINE. */
  byeOnExamine?: string
  /**
   * Serve this mailbox instead of the fixed answers to LIST, SELECT/EXAMINE, STATUS, SEARCH and NOOP, and
   * also answer FETCH, STORE, EXPUNGE, CLOSE, UNSELECT and IDLE (each with or without UID).
   */
  store?: MailStore
}

export const PLAIN_CAPS = 'IMAP4rev1 ID NAMESPACE STARTTLS LOGINDISABLED'
export const TLS_CAPS = 'IMAP4rev1 ID NAMESPACE AUTH=PLAIN AUTH=LOGIN AUTH=CRAM-MD5'

/** A well-behaved IMAP server (STARTTLS, then AUTH=PLAIN/LOGIN/CRAM-MD5) whose answer in any phase can be replaced. */
export function imapScript(f: ImapFaults = {}) {
  return async (c: ScriptConnection) => {
    // Each answer goes out in one write, as real servers do (separate small writes meet delayed ACKs).
    const send = (...lines: string[]) => c.send(lines.map((l) => l + '\r\n').join(''))
    send(f.greeting ?? '* OK scripted IMAP ready')
    if (f.greeting?.startsWith('* BYE')) {
      c.close()
      return
    }
    const mailbox = f.store && new MailboxSession(f.store, c, send)
    try {
      let tls = false
      for (;;) {
        const line = await c.expect().catch(() => undefined)
        if (line === undefined) return // the client went away
        const [tag = '', verbText = '', ...args] = line.split(' ')
        const verb = verbText.toUpperCase()
        const ok = (text = 'done') => `${tag} OK ${text}`
        if (verb === f.hang) continue
        if (mailbox && (await mailbox.command(tag, verb, args.join(' ')))) continue
        if (verb === 'CAPABILITY') {
          send(`* CAPABILITY ${tls ? (f.capsTls ?? TLS_CAPS) : (f.caps ?? PLAIN_CAPS)}`, ok())
        } else if (verb === 'STARTTLS') {
          if (f.starttls !== undefined && f.starttls !== 'drop') {
            send(`${tag} ${f.starttls}`)
            continue
          }
          send(ok('Begin TLS negotiation now'))
          if (f.starttls === 'drop') {
            c.close()
            return
          }
          await c.startTls(f.cert ?? certs().good)
          tls = true
        } else if (verb === 'ID') {
          send('* ID ("name" "scripted")', ok())
        } else if (verb === 'AUTHENTICATE' || verb === 'LOGIN') {
          const mechanism = verb === 'LOGIN' ? 'IMAP-LOGIN' : (args[0] ?? '').toUpperCase()
          if (mechanism === 'LOGIN') {
            send('+ VXNlcm5hbWU6')
            await c.expect()
            send('+ UGFzc3dvcmQ6')
            await c.expect()
          } else if (verb === 'AUTHENTICATE' && args.length === 1) {
            send('+ ') // PLAIN, and OAuth without SASL-IR: the payload comes as a continuation
            await c.expect()
          }
          const refusal = f.login?.[mechanism] ?? f.login?.['*']
          send(refusal ? `${tag} ${refusal}` : ok('Logged in'))
        } else if (verb === 'NAMESPACE') {
          send('* NAMESPACE (("" "/")) NIL NIL', ok())
        } else if (verb === 'LIST' || verb === 'LSUB') {
          send(`* ${verb} (\\HasNoChildren) "/" INBOX`, ok())
        } else if (verb === 'EXAMINE') {
          if (f.byeOnExamine) {
            send(f.byeOnExamine)
            c.close()
            return
          }
          if (f.examine) send(`${tag} ${f.examine}`)
          else
            send(
              '* FLAGS (\\Answered \\Seen \\Deleted)',
              '* 3 EXISTS',
              '* 1 RECENT',
              '* OK [UIDVALIDITY 7] UIDs valid',
              ok('[READ-ONLY] Examine completed'),
            )
        } else if (verb === 'SEARCH') {
          send('* SEARCH 2 3', ok())
        } else if (verb === 'STATUS') {
          send(
            ...(f.status ? [`${tag} ${f.status}`] : ['* STATUS INBOX (MESSAGES 5 RECENT 0 UNSEEN 4)', ok()]),
          )
        } else if (verb === 'NOOP') {
          send(ok())
        } else if (verb === 'LOGOUT') {
          send('* BYE Logging out', ok())
          await c.closed() // the client closes once it has the tagged OK
          return
        } else {
          send(`${tag} BAD unknown command`)
        }
      }
    } finally {
      mailbox?.end()
    }
  }
}

// ---------------------------------------------------------------- the stateful mailbox

export interface StoredMail {
  uid: number
  flags: string[]
  /** The message text, CRLF lines. */
  raw: string
  internalDate: Date
}

/** One expunge the server carried out: by which command, in which folder, which UIDs went. */
export interface Expunge {
  command: 'EXPUNGE' | 'UID EXPUNGE' | 'CLOSE'
  folder: string
  uids: number[]
}

interface Folder {
  name: string
  specialUse: string | undefined
  uidValidity: number
  uidNext: number
  mails: StoredMail[]
}

/** An in-memory mailbox shared by the scripted IMAP server's connections and whoever delivers into it. */
export class MailStore {
  /** Every expunge, in order; a test asserts on it (also CLOSE, which expunges silently). */
  readonly expunged: Expunge[] = []
  /** A slow indexer: SEARCH answers nothing while this is set. */
  searchFindsNothing: boolean
  /** A loose server: SEARCH HEADER matches the value anywhere in the message (tokenising full-text search). */
  searchMatchesText: boolean
  readonly #folders = new Map<string, Folder>()
  readonly #listeners = new Set<() => void>()

  /** `junk`: a folder flagged \Junk in LIST (RFC 6154). */
  constructor(options: { junk?: string; searchFindsNothing?: boolean; searchMatchesText?: boolean } = {}) {
    this.searchFindsNothing = options.searchFindsNothing ?? false
    this.searchMatchesText = options.searchMatchesText ?? false
    this.#add('INBOX', undefined)
    if (options.junk !== undefined) this.#add(options.junk, '\\Junk')
  }

  #add(name: string, specialUse: string | undefined) {
    this.#folders.set(name, { name, specialUse, uidValidity: 1700000000, uidNext: 1, mails: [] })
  }

  /** Stores a message (the next UID of the folder) and tells idling clients; returns its UID. */
  deliver(raw: string, options: { folder?: string | undefined; flags?: string[] } = {}): number {
    const folder = this.folder(options.folder ?? 'INBOX')
    if (!folder) throw new Error(`no folder ${options.folder ?? 'INBOX'}`)
    const uid = folder.uidNext++
    folder.mails.push({ uid, flags: [...(options.flags ?? [])], raw, internalDate: new Date() })
    for (const listener of this.#listeners) listener()
    return uid
  }

  mails(folder = 'INBOX'): readonly StoredMail[] {
    return this.folder(folder)?.mails ?? []
  }

  folder(name: string): Folder | undefined {
    return (
      this.#folders.get(name) ?? (name.toUpperCase() === 'INBOX' ? this.#folders.get('INBOX') : undefined)
    )
  }

  get folders(): readonly Folder[] {
    return [...this.#folders.values()]
  }

  onChange(listener: () => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }
}

/**
 * One connection's view of the store. New mail becomes visible to the client only when announced (EXISTS
 * on SELECT, NOOP, CHECK or during IDLE), as on a server that reports changes only when asked: a client
 * that never polls never sees it.
 */
class MailboxSession {
  #selected: { folder: Folder; readOnly: boolean; known: number } | undefined
  #idling = false
  readonly #store: MailStore
  readonly #conn: ScriptConnection
  readonly #send: (...lines: string[]) => void
  readonly #unsubscribe: () => void

  constructor(store: MailStore, conn: ScriptConnection, send: (...lines: string[]) => void) {
    this.#store = store
    this.#conn = conn
    this.#send = send
    this.#unsubscribe = store.onChange(() => {
      if (this.#idling) this.#send(...this.#announce())
    })
  }

  end() {
    this.#unsubscribe()
  }

  /** Untagged EXISTS for mail the client has not been told about yet. */
  #announce(): string[] {
    const s = this.#selected
    if (!s || s.folder.mails.length === s.known) return []
    s.known = s.folder.mails.length
    return [`* ${s.known} EXISTS`]
  }

  /** The messages the client knows, by sequence number - 1. */
  #view(): StoredMail[] {
    return this.#selected ? this.#selected.folder.mails.slice(0, this.#selected.known) : []
  }

  /** Answers a mailbox command; false when it is not one (the caller answers it). */
  async command(tag: string, verb: string, rest: string): Promise<boolean> {
    const ok = (text = 'done') => `${tag} OK ${text}`
    const uid = verb === 'UID'
    const [sub = '', ...more] = uid ? rest.split(' ') : [verb]
    const args = uid ? more.join(' ') : rest
    const command = sub.toUpperCase()
    switch (command) {
      case 'LIST':
      case 'LSUB': {
        if (/""\s*$/.test(args)) {
          this.#send(`* ${command} (\\Noselect) "/" ""`, ok()) // asks for the hierarchy delimiter only
          return true
        }
        const lines = this.#store.folders.map(
          (f) => `* ${command} (\\HasNoChildren${f.specialUse ? ' ' + f.specialUse : ''}) "/" "${f.name}"`,
        )
        this.#send(...lines, ok())
        return true
      }
      case 'SELECT':
      case 'EXAMINE': {
        const folder = this.#store.folder(unquote(args))
        if (!folder) {
          this.#selected = undefined
          this.#send(`${tag} NO [NONEXISTENT] Mailbox doesn't exist`)
          return true
        }
        const readOnly = command === 'EXAMINE'
        this.#selected = { folder, readOnly, known: folder.mails.length }
        this.#send(
          '* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)',
          '* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.',
          `* ${folder.mails.length} EXISTS`,
          '* 0 RECENT',
          `* OK [UIDVALIDITY ${folder.uidValidity}] UIDs valid`,
          `* OK [UIDNEXT ${folder.uidNext}] Predicted next UID`,
          ok(readOnly ? '[READ-ONLY] Examine completed' : '[READ-WRITE] Select completed'),
        )
        return true
      }
      case 'STATUS': {
        const [name = '', items = ''] = /^("[^"]*"|\S+)\s+\((.*)\)$/.exec(args)?.slice(1) ?? []
        const folder = this.#store.folder(unquote(name))
        if (!folder) {
          this.#send(`${tag} NO [NONEXISTENT] Mailbox doesn't exist`)
          return true
        }
        const values: Record<string, number> = {
          MESSAGES: folder.mails.length,
          RECENT: 0,
          UIDNEXT: folder.uidNext,
          UIDVALIDITY: folder.uidValidity,
          UNSEEN: folder.mails.filter((m) => !m.flags.includes('\\Seen')).length,
        }
        const answer = items
          .split(' ')
          .filter((item) => item.toUpperCase() in values)
          .map((item) => `${item.toUpperCase()} ${String(values[item.toUpperCase()])}`)
        this.#send(`* STATUS "${folder.name}" (${answer.join(' ')})`, ok())
        return true
      }
      case 'NOOP':
      case 'CHECK':
        this.#send(...this.#announce(), ok())
        return true
      case 'IDLE': {
        this.#send('+ idling', ...this.#announce())
        this.#idling = true
        try {
          await this.#conn.expect('DONE')
        } finally {
          this.#idling = false
        }
        this.#send(ok('Idle completed'))
        return true
      }
      case 'CLOSE':
      case 'UNSELECT': {
        if (!this.#selected) break
        if (command === 'CLOSE' && !this.#selected.readOnly) this.#expunge('CLOSE', undefined)
        this.#selected = undefined
        this.#send(ok())
        return true
      }
      case 'SEARCH':
      case 'FETCH':
      case 'STORE':
      case 'EXPUNGE': {
        if (!this.#selected) {
          this.#send(`${tag} BAD No mailbox selected`)
          return true
        }
        const answer =
          command === 'SEARCH'
            ? this.#search(args, uid)
            : command === 'FETCH'
              ? this.#fetch(args, uid)
              : command === 'STORE'
                ? this.#flags(args, uid)
                : this.#expungeCommand(args, uid)
        if (typeof answer === 'string') this.#send(`${tag} ${answer}`)
        else this.#send(...answer, ok())
        return true
      }
    }
    if (uid) {
      this.#send(`${tag} BAD unknown UID command`)
      return true
    }
    return false
  }

  /** Messages in a sequence set (or UID set), with their sequence numbers. */
  #matching(set: string, uid: boolean): { seq: number; mail: StoredMail }[] {
    const view = this.#view()
    const max = uid ? (view.at(-1)?.uid ?? 0) : view.length
    return view
      .map((mail, i) => ({ seq: i + 1, mail }))
      .filter(({ seq, mail }) => inSet(set, uid ? mail.uid : seq, max))
  }

  #search(args: string, uid: boolean): string[] | string {
    const tokens = tokenize(args)
    const tests: ((m: StoredMail) => boolean)[] = []
    for (let i = 0; i < tokens.length; i++) {
      const key = (tokens[i] ?? '').toUpperCase()
      if (key === 'ALL') continue
      if (key === 'HEADER') {
        const name = tokens[++i] ?? ''
        const value = (tokens[++i] ?? '').toLowerCase()
        tests.push((m) =>
          this.#store.searchMatchesText
            ? m.raw.toLowerCase().includes(value)
            : headerValues(m.raw, name).some((v) => v.toLowerCase().includes(value)),
        )
      } else if (key === 'DELETED' || key === 'UNDELETED') {
        tests.push((m) => m.flags.includes('\\Deleted') === (key === 'DELETED'))
      } else return `BAD search key ${key} not supported here`
    }
    const hits = this.#store.searchFindsNothing
      ? []
      : this.#view().flatMap((m, i) => (tests.every((t) => t(m)) ? [uid ? m.uid : i + 1] : []))
    return [['* SEARCH', ...hits].join(' ')]
  }

  #fetch(args: string, uid: boolean): string[] | string {
    const [, set = '', items = ''] = /^(\S+)\s+(.*)$/.exec(args) ?? []
    const fields = /BODY(?:\.PEEK)?\[HEADER\.FIELDS \(([^)]*)\)\]/i.exec(items)?.[1]
    const wholeHeader = /BODY(?:\.PEEK)?\[HEADER\]/i.test(items)
    const atoms = items.replace(/\[[^\]]*\]/g, '').toUpperCase()
    const has = (item: string) => new RegExp(`(^|[ (])${item}($|[ )])`).test(atoms)
    return this.#matching(set, uid).map(({ seq, mail }) => {
      const parts: string[] = []
      if (uid || has('UID')) parts.push(`UID ${String(mail.uid)}`)
      if (has('FLAGS')) parts.push(`FLAGS (${mail.flags.join(' ')})`)
      if (has('INTERNALDATE')) parts.push(`INTERNALDATE "${imapDate(mail.internalDate)}"`)
      if (has('RFC822.SIZE')) parts.push(`RFC822.SIZE ${String(mail.raw.length)}`)
      const head = mail.raw.split('\r\n\r\n', 1)[0] ?? ''
      if (fields !== undefined) {
        const wanted = fields.toLowerCase().split(/\s+/)
        const lines = headerLines(head).filter(([name]) => wanted.includes(name.toLowerCase()))
        parts.push(
          `BODY[HEADER.FIELDS (${fields})] ${literal(lines.map(([, l]) => l + '\r\n').join('') + '\r\n')}`,
        )
      }
      if (wholeHeader) parts.push(`BODY[HEADER] ${literal(head + '\r\n\r\n')}`)
      return `* ${String(seq)} FETCH (${parts.join(' ')})`
    })
  }

  #flags(args: string, uid: boolean): string[] | string {
    const [, set = '', how = '', silent, list = ''] =
      /^(\S+)\s+([+-]?)FLAGS(\.SILENT)?\s+\(?([^)]*)\)?$/i.exec(args) ?? []
    if (this.#selected?.readOnly) return 'NO Mailbox is read-only'
    const flags = list.split(' ').filter(Boolean)
    const answers: string[] = []
    for (const { seq, mail } of this.#matching(set, uid)) {
      if (how === '+') mail.flags = [...new Set([...mail.flags, ...flags])]
      else if (how === '-') mail.flags = mail.flags.filter((f) => !flags.includes(f))
      else mail.flags = [...flags]
      if (silent === undefined)
        answers.push(
          `* ${String(seq)} FETCH (${uid ? `UID ${String(mail.uid)} ` : ''}FLAGS (${mail.flags.join(' ')}))`,
        )
    }
    return answers
  }

  #expungeCommand(args: string, uid: boolean): string[] | string {
    if (this.#selected?.readOnly) return 'NO Mailbox is read-only'
    return this.#expunge(uid ? 'UID EXPUNGE' : 'EXPUNGE', uid ? args.trim() : undefined)
  }

  /** Removes the \Deleted messages the client knows (only those in the UID set, if given); EXPUNGE responses. */
  #expunge(command: Expunge['command'], uidSet: string | undefined): string[] {
    const s = this.#selected
    if (!s) return []
    const max = this.#view().at(-1)?.uid ?? 0
    const gone = this.#view().filter(
      (m) => m.flags.includes('\\Deleted') && (uidSet === undefined || inSet(uidSet, m.uid, max)),
    )
    const answers: string[] = []
    for (const mail of gone) {
      const seq = s.folder.mails.indexOf(mail) + 1
      s.folder.mails.splice(seq - 1, 1)
      s.known--
      answers.push(`* ${String(seq)} EXPUNGE`)
    }
    this.#store.expunged.push({ command, folder: s.folder.name, uids: gone.map((m) => m.uid) })
    return answers
  }
}

/** Whether n is in an IMAP sequence set ("1:*,4,7:9"); `*` is the largest number in use, and a:b = b:a. */
function inSet(set: string, n: number, max: number): boolean {
  const value = (text: string) => (text === '*' ? max : Number(text))
  return set.split(',').some((part) => {
    const [a = '', b = a] = part.split(':')
    const [lo, hi] = [value(a), value(b)].sort((x, y) => x - y)
    return n >= (lo ?? 0) && n <= (hi ?? 0)
  })
}

/** Atoms and quoted strings (unescaped) of a command's arguments. */
function tokenize(text: string): string[] {
  return [...text.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) =>
    m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] ?? ''),
  )
}

const unquote = (text: string) => tokenize(text)[0] ?? ''

/** The header fields of a header block as [name, text with folded lines]. */
function headerLines(head: string): [string, string][] {
  const fields: [string, string][] = []
  for (const line of head.split('\r\n')) {
    const last = fields.at(-1)
    if (/^[ \t]/.test(line) && last) last[1] += '\r\n' + line
    else fields.push([line.slice(0, Math.max(0, line.indexOf(':'))), line])
  }
  return fields
}

/** Unfolded values of one header field. */
function headerValues(raw: string, name: string): string[] {
  const head = raw.split('\r\n\r\n', 1)[0] ?? ''
  return headerLines(head)
    .filter(([n]) => n.toLowerCase() === name.toLowerCase())
    .map(([n, text]) =>
      text
        .slice(n.length + 1)
        .replace(/\r\n/g, '')
        .trim(),
    )
}

const literal = (text: string) => `{${String(Buffer.byteLength(text, 'latin1'))}}\r\n${text}`

/** INTERNALDATE's form: "17-Jul-1996 02:44:25 +0000". */
function imapDate(date: Date): string {
  const [, day = '', month = '', year = '', time = ''] =
    /^\w+, (\d+) (\w+) (\d+) (\S+)/.exec(date.toUTCString()) ?? []
  return `${day.padStart(2, '0')}-${month}-${year} ${time} +0000`
}
