// The imap prober: banner, CAPABILITY, STARTTLS or implicit TLS, login, EXAMINE or STATUS, LOGOUT; every command timed.
import type { ImapFlow } from 'imapflow'
import { IMAP_DIALOGUE_METRICS, openImap } from '../../dialogues/imap.ts'
import { gauge, setGauge } from '../../metrics.ts'
import { defineProber, type ModuleOf, type Prober } from '../../prober.ts'
import type { ImapSession } from '../../protocol/imap-session.ts'
import { credentialLeg, ImapSettingsSchema, wellKnownPort, type ImapSettings } from '../../settings.ts'

const MAILBOX_MESSAGES = gauge('probe_imap_mailbox_messages', 'Messages in the mailbox')
const MAILBOX_RECENT = gauge('probe_imap_mailbox_recent', 'Messages with \\Recent in the mailbox')
const MAILBOX_UNSEEN = gauge('probe_imap_mailbox_unseen', 'Messages without \\Seen in the mailbox')

export const imapProber = defineProber({
  name: 'imap',
  settings: ImapSettingsSchema,
  defaultPort: (imap) => wellKnownPort.imap(imap.tls),
  credentialLegs: (imap) => credentialLeg(['imap'], imap),
  sendsMail: () => false,
  metrics: [...IMAP_DIALOGUE_METRICS, MAILBOX_MESSAGES, MAILBOX_RECENT, MAILBOX_UNSEEN],
  probe: (target, module, ctx) => probeImap(target, module, ctx),
})

export const probeImap: Prober<ModuleOf<'imap', ImapSettings>> = async (target, module, ctx) => {
  const settings = module.imap
  const { client, session } = await openImap(target, settings, ctx)
  try {
    const box = await session.during('select', () => checkMailbox(client, session, settings))
    for (const [metric, value] of [
      [MAILBOX_MESSAGES, box.messages],
      [MAILBOX_RECENT, box.recent],
      [MAILBOX_UNSEEN, box.unseen],
    ] as const)
      if (value !== undefined) setGauge(ctx.registry, metric, value)
    await session.during('logout', () => client.logout())
  } finally {
    session.close()
  }
}

/** Read-only: EXAMINE (never SELECT, so no flag changes and no expunge) or STATUS, as configured. */
async function checkMailbox(client: ImapFlow, session: ImapSession, settings: ImapSettings) {
  if (settings.mailbox_check === 'status') {
    const status = await client.status(settings.mailbox, { messages: true, recent: true, unseen: true })
    if (!status) throw new Error(`STATUS ${settings.mailbox} failed`) // imapflow answers a NO with false
    return { messages: status.messages, recent: status.recent, unseen: status.unseen }
  }
  const box = await client.mailboxOpen(settings.mailbox, { readOnly: true })
  // EXAMINE's [UNSEEN n] is the first unseen message, not a count: SEARCH UNSEEN counts (RETURN COUNT with ESEARCH).
  const unseen = await client.search({ seen: false }, { returnOptions: ['COUNT'] })
  if (unseen === false || unseen === undefined) throw new Error('SEARCH UNSEEN failed')
  return {
    messages: box.exists,
    recent: session.recent,
    unseen: Array.isArray(unseen) ? unseen.length : unseen.count,
  }
}
