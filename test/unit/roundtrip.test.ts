// roundtrip prober against in-process servers: a scripted SMTP server delivers into an in-memory mailbox that a
// scripted IMAP (or POP3) server serves, so polling, the header-scan fallback, Junk, deletion and the sweep show
// on the wire.
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { after, test } from 'node:test'
import { MailStore, imapScript, type ImapFaults } from '../servers/imap.ts'
import { scriptedServer, type ScriptConnection } from '../servers/scripted.ts'
import { smtpScript } from '../servers/smtp.ts'
import { roundtripModule } from '../helpers/modules.ts'
import { probe } from '../helpers/probe.ts'
import { RoundtripStates } from '../../src/probers/roundtrip/state.ts'
import { lookDelays } from '../../src/probers/roundtrip/mailbox.ts'

// A late imapflow error without a listener, or a rejection nobody awaits, must never happen.
const stray: unknown[] = []
process.on('unhandledRejection', (err) => stray.push(err))
process.on('uncaughtException', (err) => stray.push(err))
after(() => {
  assert.deepEqual(stray, [])
})

const ALL_CAPS = 'IMAP4rev1 AUTH=PLAIN IDLE UIDPLUS'

/**
 * An SMTP server whose accepted mail lands in `store` (after `delayMs`, in `folder`; never with deliver: false),
 * and an IMAP server on the same store.
 */
async function imapRig(
  t: TestContext,
  options: {
    caps?: string
    store?: MailStore
    delayMs?: number
    folder?: string
    deliver?: boolean
    faults?: ImapFaults
    /** Replaces the delivery of our mail (default: into `folder` after `delayMs`). */
    onMessage?: (raw: string, store: MailStore, ours: number[]) => void
  } = {},
) {
  const store = options.store ?? new MailStore()
  /** Where our mail went: its UID. */
  const ours: number[] = []
  const imap = await scriptedServer(
    t,
    imapScript({ caps: options.caps ?? ALL_CAPS, store, ...options.faults }),
  )
  const smtp = await scriptedServer(
    t,
    smtpScript({
      starttls: false,
      onMessage: (raw) => {
        if (options.onMessage) return options.onMessage(raw, store, ours)
        if (options.deliver === false) return
        setTimeout(() => ours.push(store.deliver(raw, { folder: options.folder })), options.delayMs ?? 0)
      },
    }),
  )
  return {
    store,
    imap,
    smtp,
    ours,
    /** One probe; `extra` are lines under `roundtrip:`. */
    run: ({
      extra,
      timeout,
      moduleName,
      roundtripStates,
    }: { extra?: string[]; timeout?: string; moduleName?: string; roundtripStates?: RoundtripStates } = {}) =>
      probe(roundtripModule(imap.port, { extra, timeout }), `127.0.0.1:${smtp.port}`, {
        ...(moduleName === undefined ? {} : { moduleName }),
        ...(roundtripStates === undefined ? {} : { roundtripStates }),
      }),
  }
}

/** The IMAP commands a client sent, without tags (continuation lines and DONE included as sent). */
const commands = (received: readonly string[]) => received.map((l) => l.replace(/^[A-Z0-9.]+ (?=[A-Z])/, ''))
/** Any command that expunges: EXPUNGE, UID EXPUNGE, or CLOSE (which expunges silently). */
const expunging = (received: readonly string[]) =>
  commands(received).filter((l) => /^(UID EXPUNGE|EXPUNGE|CLOSE)\b/i.test(l))

function mail(headers: Record<string, string>, body = 'hello\r\n') {
  const head = Object.entries({ From: 'friend@example.org', To: 'probe@mx.test', ...headers })
    .map(([k, v]) => `${k}: ${v}`)
    .join('\r\n')
  return `${head}\r\n\r\n${body}`
}
/** A probe mail as another scrape (or module) left it in the mailbox. */
const probeMail = (id: string, module: string, sentAt: number) =>
  mail({
    Subject: `mailprobe test ${id}`,
    'X-Mailprobe-Id': id,
    'X-Mailprobe-Module': module,
    'X-Mailprobe-Sent': String(sentAt),
  })
const subjects = (store: MailStore, folder = 'INBOX') =>
  store.mails(folder).map((m) => /^Subject: (.*)$/m.exec(m.raw)?.[1])

test('roundtrip: without IDLE the mail is found by NOOP polling, then deleted by UID', async (t) => {
  const rig = await imapRig(t, { caps: 'IMAP4rev1 AUTH=PLAIN UIDPLUS', delayMs: 150 })
  const r = await rig.run()
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_roundtrip_found'), 1)
  assert.equal(r.value('probe_roundtrip_found_in_junk'), 0)
  const sent = commands(rig.imap.received)
  assert.ok(!sent.some((l) => /^IDLE\b/.test(l)), 'no IDLE without the capability')
  // The server announces new mail only when asked: NOOP is what made it visible.
  assert.ok(sent.filter((l) => l === 'NOOP').length >= 1, sent.join('\n'))
  const delivery = r.value('probe_roundtrip_delivery_seconds') ?? -1
  assert.ok(delivery >= 0.15 && delivery < 1, `delivery ${delivery}s`)
  assert.ok((r.value('probe_roundtrip_arrival_seconds') ?? -1) >= 0, 'INTERNALDATE was read')
  for (const phase of ['send', 'detect', 'fetch', 'cleanup'])
    assert.ok((r.value('probe_roundtrip_duration_seconds', { phase }) ?? 0) > 0, `phase ${phase}`)
  assert.deepEqual(rig.store.mails(), [], 'our mail is gone')
  assert.deepEqual(rig.imap.errors, [])
  assert.deepEqual(rig.smtp.errors, [])
})

// The mail arrives after the receiving leg's SELECT, so imapflow's UIDNEXT (from that SELECT) does not
// cover it: the scan must follow the message count, not UIDNEXT.
test('roundtrip: when SEARCH finds nothing (a slow indexer), the header scan of new messages finds the mail', async (t) => {
  const store = new MailStore({ searchFindsNothing: true })
  store.deliver(mail({ Subject: 'a user mail already in the inbox' }))
  const rig = await imapRig(t, { store, delayMs: 100 })
  const r = await rig.run()
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_roundtrip_found'), 1)
  const sent = commands(rig.imap.received)
  assert.ok(
    sent.some((l) => /^(UID )?FETCH \S+ \(UID BODY\.PEEK\[HEADER\.FIELDS \(x-mailprobe-id /i.test(l)),
    sent.join('\n'),
  )
  assert.deepEqual(subjects(rig.store), ['a user mail already in the inbox'], 'only our mail was deleted')
})

test('roundtrip: a user mail that merely quotes our marker (a bounce) is neither taken for ours nor deleted', async (t) => {
  const store = new MailStore({ searchMatchesText: true })
  const rig = await imapRig(t, {
    store,
    onMessage: (raw, s, ours) => {
      const id = /^X-Mailprobe-Id: (\S+)/m.exec(raw)?.[1] ?? '?'
      // First a bounce that quotes the probe mail in its body, then (later) the probe mail itself.
      s.deliver(
        mail(
          { Subject: 'Undelivered Mail Returned to Sender' },
          `Original headers:\r\nX-Mailprobe-Id: ${id}\r\n`,
        ),
      )
      setTimeout(() => ours.push(s.deliver(raw)), 150)
    },
  })
  const r = await rig.run()
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(rig.ours[0], 2, 'the probe mail is the second message')
  assert.deepEqual(subjects(rig.store), ['Undelivered Mail Returned to Sender'], 'the bounce is still there')
  const delivery = r.value('probe_roundtrip_delivery_seconds') ?? -1
  assert.ok(delivery >= 0.15, `found the real mail (${delivery}s), not the bounce at once`)
})

test('roundtrip: without UIDPLUS our mail is only flagged \\Deleted and nothing is expunged', async (t) => {
  const store = new MailStore()
  store.deliver(mail({ Subject: 'deleted by the user, not expunged yet' }), { flags: ['\\Deleted'] })
  const rig = await imapRig(t, { store, caps: 'IMAP4rev1 AUTH=PLAIN IDLE' })
  const r = await rig.run()
  assert.equal(r.value('probe_success'), 1, r.debug)
  const [uid] = rig.ours
  assert.equal(uid, 2)
  const sent = commands(rig.imap.received)
  assert.ok(sent.includes('UID STORE 2 +FLAGS (\\Deleted)'), sent.join('\n'))
  assert.deepEqual(expunging(rig.imap.received), [], 'no EXPUNGE, UID EXPUNGE or CLOSE')
  assert.deepEqual(rig.store.expunged, [])
  assert.deepEqual(
    rig.store.mails().map((m) => [m.uid, m.flags]),
    [
      [1, ['\\Deleted']],
      [2, ['\\Deleted']],
    ],
    "the user's \\Deleted mail is still there, and ours waits flagged for the user's next expunge",
  )
  assert.match(r.debug, /lacks UIDPLUS/)
})

test('roundtrip: with UIDPLUS exactly UID EXPUNGE of our UID is sent, never a bare EXPUNGE', async (t) => {
  const store = new MailStore()
  store.deliver(mail({ Subject: 'deleted by the user, not expunged yet' }), { flags: ['\\Deleted'] })
  const rig = await imapRig(t, { store })
  const r = await rig.run()
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.deepEqual(rig.ours, [2])
  assert.deepEqual(expunging(rig.imap.received), ['UID EXPUNGE 2'])
  assert.deepEqual(rig.store.expunged, [{ command: 'UID EXPUNGE', folder: 'INBOX', uids: [2] }])
  assert.deepEqual(
    rig.store.mails().map((m) => [m.uid, m.flags]),
    [[1, ['\\Deleted']]],
  )
})

test('roundtrip: a mail delivered into the \\Junk folder is found there, reported, and deleted there', async (t) => {
  const store = new MailStore({ junk: 'Spam' })
  store.deliver(mail({ Subject: 'user mail in the inbox' }))
  const rig = await imapRig(t, { store, folder: 'Spam', delayMs: 50 })
  const r = await rig.run()
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_roundtrip_found'), 1)
  assert.equal(r.value('probe_roundtrip_found_in_junk'), 1)
  assert.ok(commands(rig.imap.received).includes('SELECT Spam'))
  assert.deepEqual(rig.store.expunged, [{ command: 'UID EXPUNGE', folder: 'Spam', uids: [1] }])
  assert.deepEqual(rig.store.mails('Spam'), [])
  assert.deepEqual(subjects(rig.store), ['user mail in the inbox'])
})

test('roundtrip (sync): a mail that never arrives fails in phase detect before the deadline, and still logs out', async (t) => {
  const rig = await imapRig(t, { deliver: false })
  const r = await rig.run({ timeout: '2s' })
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'detect', r.debug)
  assert.equal(r.value('probe_roundtrip_found'), 0)
  assert.match(r.debug, /not in the mailbox/)
  // It waits until cleanup_reserve (500 ms) before the deadline, then answers in time.
  assert.ok(r.seconds > 1.2 && r.seconds < 2, `answered after ${r.seconds}s`)
  assert.ok((r.value('probe_roundtrip_duration_seconds', { phase: 'cleanup' }) ?? 0) > 0)
  assert.ok(commands(rig.imap.received).includes('LOGOUT'), 'cleanup ran and logged out')
  assert.equal(rig.smtp.connections, 1)
})

test("roundtrip: the sweep deletes this module's stale probe mails and nothing else", async (t) => {
  const hour = 3600_000
  const store = new MailStore({ junk: 'Spam' })
  const now = Date.now()
  store.deliver(mail({ Subject: 'user mail' }))
  store.deliver(probeMail('stale-1', 'sweeper', now - 2 * hour))
  store.deliver(probeMail('other-1', 'sweeper-b', now - 2 * hour)) // SEARCH matches substrings
  store.deliver(probeMail('young-1', 'sweeper', now - 60_000))
  store.deliver(probeMail('broken-1', 'sweeper', Number.NaN)) // no readable send time: kept
  store.deliver(probeMail('stale-2', 'sweeper', now - 3 * hour), { folder: 'Spam' })
  const rig = await imapRig(t, { store })
  const r = await rig.run({ extra: ['sweep_after: 1h'], moduleName: 'sweeper' })
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_roundtrip_swept_total'), 2)
  assert.deepEqual(subjects(rig.store), [
    'user mail',
    'mailprobe test other-1',
    'mailprobe test young-1',
    'mailprobe test broken-1',
  ])
  assert.deepEqual(rig.store.mails('Spam'), [])
  assert.deepEqual(rig.ours, [6])
  assert.deepEqual(rig.store.expunged, [
    { command: 'UID EXPUNGE', folder: 'INBOX', uids: [2, 6] },
    { command: 'UID EXPUNGE', folder: 'Spam', uids: [1] },
  ])
})

test('roundtrip: a receive leg that refuses the login fails in its auth phase before any mail is sent', async (t) => {
  const rig = await imapRig(t, {
    faults: { login: { '*': 'NO [AUTHENTICATIONFAILED] Authentication failed.' } },
  })
  const r = await rig.run()
  assert.equal(r.value('probe_success'), 0)
  assert.equal(r.failedPhase, 'receive_auth', r.debug)
  assert.match(r.debug, /AUTHENTICATIONFAILED/)
  assert.ok((r.value('probe_imap_duration_seconds', { leg: 'receive', phase: 'auth' }) ?? 0) > 0)
  assert.equal(r.value('probe_roundtrip_duration_seconds', { phase: 'send' }), 0)
  assert.equal(rig.smtp.connections, 0, 'no SMTP connection: no mail wasted')
})

/**
 * A POP3 server whose maildrop is a snapshot taken at login (RFC 1939), as real ones do: a mail delivered
 * during a session shows only at the next login. DELEs take effect at QUIT. TOP's answer ends with its
 * terminating "." split from the CRLF around it, in separate writes.
 */
function pop3Maildrop(drop: string[]) {
  return async (c: ScriptConnection) => {
    c.line('+OK POP3 ready')
    let snapshot: string[] = []
    const deleted = new Set<number>()
    for (;;) {
      const line = await c.expect().catch(() => undefined)
      if (line === undefined) return
      const [verb = '', arg = ''] = line.split(' ')
      const n = Number(arg)
      const message = snapshot[n - 1]
      if (verb === 'CAPA') c.line('+OK\r\nTOP\r\nUIDL\r\nUSER\r\n.')
      else if (verb === 'USER') c.line('+OK')
      else if (verb === 'PASS') {
        snapshot = [...drop]
        c.line('+OK Logged in.')
      } else if (verb === 'STAT') c.line(`+OK ${String(snapshot.length)} ${String(snapshot.join('').length)}`)
      else if (verb === 'TOP' && message !== undefined && !deleted.has(n)) {
        const head = message.split('\r\n\r\n', 1)[0] ?? ''
        await c.sendChunks([`+OK\r\n${head}\r\n`, '\r\n.', '\r\n'])
      } else if (verb === 'DELE' && message !== undefined && !deleted.has(n)) {
        deleted.add(n)
        c.line('+OK Marked to be deleted.')
      } else if (verb === 'QUIT') {
        for (const gone of [...deleted].map((i) => snapshot[i - 1])) drop.splice(drop.indexOf(gone ?? ''), 1)
        c.line('+OK Logging out.')
        c.close()
        return
      } else c.line('-ERR no such message or command')
    }
  }
}

test('roundtrip: POP3 finds the mail on a later login, DELEs only it, and reads a split TOP terminator', async (t) => {
  const drop = [mail({ Subject: 'user mail' })]
  const pop3 = await scriptedServer(t, pop3Maildrop(drop))
  const received = new Date(Date.now() - 1000).toUTCString().replace('GMT', '+0000')
  const smtp = await scriptedServer(
    t,
    smtpScript({
      starttls: false,
      // Like an MTA's local delivery: a Received: stamp on top, whose date says when the mail was stored.
      onMessage: (raw) => drop.push(`Received: from mx.test by pop.test; ${received}\r\n${raw}`),
    }),
  )
  const r = await probe(roundtripModule(pop3.port, { protocol: 'pop3' }), `127.0.0.1:${smtp.port}`)
  assert.equal(r.value('probe_success'), 1, r.debug)
  assert.equal(r.value('probe_roundtrip_found'), 1)
  assert.ok(pop3.connections >= 2, 'logged in again to see the new mail')
  assert.equal(pop3.received.filter((l) => l === 'PASS s3cr3t-pw').length, pop3.connections)
  assert.deepEqual(
    pop3.received.filter((l) => l.startsWith('DELE')),
    ['DELE 2'],
  )
  assert.ok(r.value('probe_roundtrip_arrival_seconds') !== undefined, 'the Received: date was read')
  assert.deepEqual(drop, [mail({ Subject: 'user mail' })])
  assert.deepEqual(pop3.errors, [])
})

test('roundtrip: POP3 looks again early (10 ms, doubling), not a whole poll_interval later', async (t) => {
  const drop: string[] = []
  const pop3 = await scriptedServer(t, pop3Maildrop(drop))
  const smtp = await scriptedServer(t, smtpScript({ starttls: false, onMessage: (raw) => drop.push(raw) }))
  const module = roundtripModule(pop3.port, { protocol: 'pop3', timeout: '5s' }).replace(
    'poll_interval: 50ms',
    'poll_interval: 2s',
  )
  const r = await probe(module, `127.0.0.1:${smtp.port}`)
  assert.equal(r.value('probe_success'), 1, r.debug)
  // Delivered at once: found on an early look (before, the first new login came 2 s later).
  const delivery = r.value('probe_roundtrip_delivery_seconds') ?? -1
  assert.ok(delivery >= 0 && delivery < 1, `delivery ${delivery}s with poll_interval 2s`)
  assert.ok(pop3.connections <= 4, `${pop3.connections} logins for a mail delivered at once`)
})

test('roundtrip: the waits between looks start at 10 ms and double up to poll_interval', () => {
  const next = lookDelays(1)
  assert.deepEqual(
    Array.from({ length: 9 }, () => next()),
    [10, 20, 40, 80, 160, 320, 640, 1000, 1000],
  )
  const tight = lookDelays(0.015)
  assert.deepEqual([tight(), tight(), tight()], [10, 15, 15])
})

test('roundtrip: without UIDPLUS the sweep counts a stale mail once, and never sends its UID again', async (t) => {
  // Swept mail stays, flagged \Deleted: found again, it was counted (1, 2, 3) and its UID sent on every scrape,
  // until the UID list outgrew the server's line limit.
  const store = new MailStore()
  store.deliver(probeMail('stale-1', 'sweeper', Date.now() - 2 * 3600_000))
  const rig = await imapRig(t, { store, caps: 'IMAP4rev1 AUTH=PLAIN IDLE' })
  const roundtripStates = new RoundtripStates() // one exporter: the counter adds up across scrapes
  const swept: (number | undefined)[] = []
  for (let i = 0; i < 3; i++) {
    const r = await rig.run({ extra: ['sweep_after: 1h'], moduleName: 'sweeper', roundtripStates })
    assert.equal(r.value('probe_success'), 1, r.debug)
    swept.push(r.value('probe_roundtrip_swept_total'))
  }
  assert.deepEqual(swept, [1, 1, 1])
  assert.deepEqual(rig.ours, [2, 3, 4])
  assert.deepEqual(
    commands(rig.imap.received).filter((l) => l.startsWith('UID STORE')),
    ['UID STORE 1:2 +FLAGS (\\Deleted)', 'UID STORE 3 +FLAGS (\\Deleted)', 'UID STORE 4 +FLAGS (\\Deleted)'],
    'each scrape flags only its own mail (and the first the stale one)',
  )
  assert.ok(
    commands(rig.imap.received).includes('UID SEARCH HEADER X-MAILPROBE-MODULE sweeper UNDELETED'),
    'the sweep asks for undeleted mail only',
  )
  assert.deepEqual(expunging(rig.imap.received), [])
  assert.equal(rig.store.mails().length, 4, 'all still there, flagged for the next expunge')
})

/**
 * An SMTP server that accepts every mail (handing it to `onMessage`) and, on its first connection only, never
 * answers QUIT: the mail is delivered, but the client cannot know whether the session ended well.
 */
function smtpSilentQuit(onMessage: (raw: string) => void) {
  let connections = 0
  return async (c: ScriptConnection) => {
    const silent = connections++ === 0
    c.line('220 mx.test ESMTP ready')
    for (;;) {
      const line = await c.expect().catch(() => undefined)
      if (line === undefined) return
      const verb = line.split(' ')[0]?.toUpperCase()
      if (verb === 'EHLO') c.line('250-mx.test\r\n250 ENHANCEDSTATUSCODES')
      else if (verb === 'MAIL' || verb === 'RCPT' || verb === 'RSET') c.line('250 2.1.0 Ok')
      else if (verb === 'DATA') {
        c.line('354 End data with <CR><LF>.<CR><LF>')
        const message: string[] = []
        for (let text = await c.expect(); text !== '.'; text = await c.expect())
          message.push(text.startsWith('.') ? text.slice(1) : text)
        onMessage(message.join('\r\n') + '\r\n')
        c.line('250 2.0.0 Ok: queued as QUIET1')
      } else if (verb === 'QUIT') {
        if (silent) return c.closed()
        c.line('221 2.0.0 Bye')
        c.close()
        return
      } else c.line('502 5.5.2 Error: command not recognized')
    }
  }
}

const tempStateFile = () => join(mkdtempSync(join(tmpdir(), 'mailprobe-rt-unit-')), 'state.json')
const idIn = (raw: string) => /^X-Mailprobe-Id: (\S+)/m.exec(raw)?.[1]

test('roundtrip (deferred): a mail whose QUIT is never answered is in flight at once, and the next scrape finds it', async (t) => {
  const store = new MailStore()
  const imap = await scriptedServer(t, imapScript({ caps: ALL_CAPS, store }))
  const smtp = await scriptedServer(
    t,
    smtpSilentQuit((raw) => store.deliver(raw)),
  )
  const file = tempStateFile()
  const module = roundtripModule(imap.port, {
    timeout: '1500ms',
    extra: ['mode: deferred', `state_file: ${file}`],
  })
  const target = `127.0.0.1:${smtp.port}`
  const first = await probe(module, target)
  assert.equal(first.value('probe_success'), 0)
  assert.equal(first.failedPhase, 'send_quit', first.debug)
  assert.equal(first.value('probe_roundtrip_pending'), 1, 'accepted by DATA: in flight')
  const id = idIn(store.mails()[0]?.raw ?? '')
  assert.ok(id)
  assert.match(readFileSync(file, 'utf8'), new RegExp(id), 'in the state file')

  const second = await probe(module, target) // a restarted exporter: the state comes from the file
  assert.equal(second.value('probe_success'), 1, second.debug)
  assert.equal(second.value('probe_roundtrip_found'), 1)
  assert.equal(second.value('probe_roundtrip_lost_total'), 0)
  assert.equal(second.value('probe_roundtrip_pending'), 1, 'the next mail')
  assert.ok(!store.mails().some((m) => m.raw.includes(id)), 'the first mail was found and deleted')
})

test('roundtrip (deferred): a mail whose QUIT is never answered and that never arrives is counted as lost', async (t) => {
  const imap = await scriptedServer(t, imapScript({ caps: ALL_CAPS, store: new MailStore() }))
  const smtp = await scriptedServer(
    t,
    smtpSilentQuit(() => undefined),
  )
  const file = tempStateFile()
  const module = roundtripModule(imap.port, {
    timeout: '1500ms',
    extra: ['mode: deferred', `state_file: ${file}`, 'lost_after: 1s'],
  })
  const target = `127.0.0.1:${smtp.port}`
  const first = await probe(module, target)
  assert.equal(first.failedPhase, 'send_quit', first.debug)
  assert.equal(first.value('probe_roundtrip_pending'), 1)
  await new Promise((r) => setTimeout(r, 200)) // lost_after (1s) is over: the first probe waited 1.5s for QUIT
  const second = await probe(module, target)
  assert.equal(second.value('probe_success'), 0)
  assert.equal(second.failedPhase, 'detect', second.debug)
  assert.equal(second.value('probe_roundtrip_lost_total'), 1)
  assert.equal(second.value('probe_roundtrip_pending'), 1, 'the next mail is in flight')
})
