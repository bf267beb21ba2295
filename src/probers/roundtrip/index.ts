// The roundtrip prober: send a marked mail through the target, find it by IMAP or POP3, time the delivery,
// delete exactly that mail. sync: all in one scrape. deferred: check earlier scrapes' mails, then send the next.
import type { Registry } from 'prom-client'
import { PhaseError } from '../../errors.ts'
import { counter, counterOf, gauge, phaseMetric, setGauge } from '../../metrics.ts'
import { SMTP_DIALOGUE_METRICS } from '../../dialogues/smtp.ts'
import { IMAP_DIALOGUE_METRICS } from '../../dialogues/imap.ts'
import { POP3_DIALOGUE_METRICS } from '../../dialogues/pop3.ts'
import type { PhaseTimer } from '../../phases.ts'
import { defineProber, type ModuleOf, type ProbeContext, type Prober } from '../../prober.ts'
import { credentialLeg, wellKnownPort } from '../../settings.ts'
import { MODULE_HEADER, SENT_HEADER, type FoundMail, type Mailbox } from './mailbox.ts'
import { openImapMailbox } from './mailbox-imap.ts'
import { openPop3Mailbox } from './mailbox-pop3.ts'
import { buildMessage } from '../../protocol/message.ts'
import { RoundtripStates, type InFlight, type RouteState } from './state.ts'
import type { Target } from '../../targets.ts'
import { RoundtripSettingsSchema, type RoundtripSettings } from './settings.ts'
import { smtpConversation, type Mail } from '../../dialogues/smtp.ts'

const PHASES = ['send', 'detect', 'fetch', 'cleanup'] as const
type Phase = (typeof PHASES)[number]

const M = {
  duration: phaseMetric('roundtrip', PHASES, false),
  found: gauge(
    'probe_roundtrip_found',
    'Whether this scrape found its mail (deferred: a mail of an earlier scrape)',
  ),
  foundInJunk: gauge('probe_roundtrip_found_in_junk', 'Whether the mail was found in the junk folder'),
  arrival: gauge('probe_roundtrip_arrival_seconds', 'From SMTP acceptance to storage in the mailbox'),
  detectionLag: gauge(
    'probe_roundtrip_detection_lag_seconds',
    'From storage in the mailbox to detection by the probe',
  ),
  delivery: gauge(
    'probe_roundtrip_delivery_seconds',
    'Delivery time of the probe mail, from SMTP acceptance',
  ),
  pending: gauge('probe_roundtrip_pending', 'Probe mails sent and not yet found (deferred mode)'),
  lost: counter(
    'probe_roundtrip_lost_total',
    'Probe mails never found within lost_after, since the state began',
  ),
  swept: counter(
    'probe_roundtrip_swept_total',
    'Stale probe mails deleted by the sweep, since the state began',
  ),
  messages: gauge('probe_roundtrip_mailbox_messages', 'Messages in the receiving mailbox'),
}

export const roundtripProber = defineProber({
  name: 'roundtrip',
  settings: RoundtripSettingsSchema,
  defaultPort: (roundtrip) => wellKnownPort.smtp(roundtrip.smtp.tls),
  // Both receive sections are checked when present, the unused one too (the module's checks may see
  // a section whose own problems were reported already: nothing here assumes it is complete).
  credentialLegs: (roundtrip) => [
    ...credentialLeg(['roundtrip', 'smtp'], roundtrip.smtp),
    ...(roundtrip.receive.imap
      ? credentialLeg(['roundtrip', 'receive', 'imap'], roundtrip.receive.imap)
      : []),
    ...(roundtrip.receive.pop3
      ? credentialLeg(['roundtrip', 'receive', 'pop3'], roundtrip.receive.pop3)
      : []),
  ],
  sendsMail: () => true,
  createState: (deps) => new RoundtripStates(deps),
  metrics: [
    ...Object.values(M),
    ...SMTP_DIALOGUE_METRICS,
    ...IMAP_DIALOGUE_METRICS,
    ...POP3_DIALOGUE_METRICS,
  ],
  check(module, issue) {
    if (module.roundtrip.cleanup_reserve >= module.timeout)
      issue(
        ['roundtrip', 'cleanup_reserve'],
        `cleanup_reserve (${module.roundtrip.cleanup_reserve}s) must be less than the timeout (${module.timeout}s)`,
      )
  },
  probe: (target, module, ctx) => probeRoundtrip(target, module, ctx),
})

const probeRoundtrip: Prober<ModuleOf<'roundtrip', RoundtripSettings>, RoundtripStates> = async (
  target,
  module,
  ctx,
) => {
  const settings = module.roundtrip
  const phase = ctx.phases.timer(M.duration)
  const report = new RoundtripReport(ctx.registry)
  const state = ctx.state.get(settings.state_file)
  const key = `${ctx.moduleName}|${target.host}:${target.port}`
  // The receiving leg logs in first: IDLE then sees the arrival, and a broken mailbox wastes no mail.
  const mailbox = await openMailbox(settings, ctx)
  try {
    const round: Round = { target, settings, ctx, phase, mailbox, report }
    if (settings.mode === 'sync') {
      const swept = await syncRound(round)
      await state.update(key, (route) => (route.swept += swept))
    } else {
      await deferredRound(round, key)
    }
  } finally {
    mailbox.close()
    report.totals(state.snapshot(key))
    if (mailbox.messages !== undefined) report.messages(mailbox.messages)
  }
}

function openMailbox(settings: RoundtripSettings, ctx: ProbeContext): Promise<Mailbox> {
  const { receive } = settings
  if (receive.protocol === 'imap' && receive.imap)
    return openImapMailbox(receive.endpoint, receive.imap, settings, ctx, ctx.moduleName)
  if (receive.protocol === 'pop3' && receive.pop3)
    return openPop3Mailbox(receive.endpoint, receive.pop3, settings, ctx, ctx.moduleName)
  throw new Error(`receive.${receive.protocol} is not configured`) // the config schema prevents this
}

/** A new probe mail: our marker, module and send time in headers, the id also in the subject. */
function newMail(settings: RoundtripSettings, module: string): Mail {
  const send = settings.smtp.send
  if (!send) throw new Error('roundtrip.smtp.send is required') // the config schema prevents this
  const message = buildMessage({
    from: send.from,
    to: send.to,
    subject: send.subject,
    headers: send.headers,
    body: send.body,
    marker: { [MODULE_HEADER]: module, [SENT_HEADER]: String(Date.now()) },
  })
  return { from: send.from, to: send.to, message }
}

/**
 * Sends a new probe mail. `onAccepted` runs as soon as the server accepted it (DATA's 250), before QUIT: the
 * mail is on its way then, even if QUIT fails or the deadline hits.
 */
async function sendMail(
  target: Target,
  settings: RoundtripSettings,
  ctx: ProbeContext,
  phase: PhaseTimer<Phase>,
  onAccepted?: (sent: InFlight) => Promise<void>,
): Promise<InFlight> {
  const mail = newMail(settings, ctx.moduleName)
  let accepted: InFlight | undefined
  // The SMTP leg's own phases name its failures (send_auth, send_data); 'send' times the whole leg.
  const result = await phase('send', () =>
    smtpConversation(target, settings.smtp, ctx, {
      mail,
      labels: { leg: 'send' },
      onAccepted: async (r) => {
        accepted = { id: mail.message.id, acceptedAt: r.acceptedAt ?? Date.now() }
        await onAccepted?.(accepted)
      },
    }),
  )
  return accepted ?? { id: mail.message.id, acceptedAt: result.acceptedAt ?? Date.now() }
}

/** What one scrape of a round trip works with. */
interface Round {
  target: Target
  settings: RoundtripSettings
  ctx: ProbeContext<RoundtripStates>
  phase: PhaseTimer<Phase>
  mailbox: Mailbox
  report: RoundtripReport
}

/** One scrape does it all; returns how many stale mails were swept. */
async function syncRound({ target, settings, ctx, phase, mailbox, report }: Round): Promise<number> {
  const sent = await sendMail(target, settings, ctx, phase)
  // Keep cleanup_reserve of the deadline for deleting the mail and logging out.
  const until = ctx.deadline - settings.cleanup_reserve * 1000
  const [found] = await phase('detect', () => mailbox.find([sent.id], { until, wait: true }))
  report.found(found)
  if (found) {
    await phase('fetch', () => mailbox.details(found))
    report.delivery(sent.acceptedAt, found, 'sync')
  }
  const staleBefore = Date.now() - settings.sweep_after * 1000
  const swept = await phase('cleanup', () =>
    mailbox.cleanup(found ? [found] : [], { staleBefore, keep: [sent.id] }),
  )
  if (!found) {
    const waited = ((Date.now() - sent.acceptedAt) / 1000).toFixed(1)
    throw new PhaseError(
      'detect',
      new Error(`mail ${sent.id} not in the mailbox ${waited}s after it was accepted`),
    )
  }
  return swept
}

/** Checks the mails of earlier scrapes (found, or lost after lost_after), then sends the next one. */
async function deferredRound(
  { target, settings, ctx, phase, mailbox, report }: Round,
  key: string,
): Promise<void> {
  const state = ctx.state.get(settings.state_file)
  const inflight = state.snapshot(key).inflight
  const ids = inflight.map((m) => m.id)
  const found = await phase('detect', () => mailbox.find(ids, { until: Date.now(), wait: false }))
  for (const mail of found) await phase('fetch', () => mailbox.details(mail))
  const now = Date.now()
  // Settle in one step: a mail an overlapping scrape already settled is not counted again.
  const settled = await state.update(key, (route) => {
    const mine = route.inflight.filter((m) => found.some((f) => f.id === m.id))
    const lost = route.inflight.filter(
      (m) => !found.some((f) => f.id === m.id) && now - m.acceptedAt > settings.lost_after * 1000,
    )
    route.inflight = route.inflight.filter((m) => !mine.includes(m) && !lost.includes(m))
    route.lost += lost.length
    return { mine, lost, keep: route.inflight.map((m) => m.id) }
  })
  const newest = [...settled.mine].sort((a, b) => b.acceptedAt - a.acceptedAt)[0]
  const newestFound = newest && found.find((f) => f.id === newest.id)
  report.found(newestFound)
  if (newest && newestFound) report.delivery(newest.acceptedAt, newestFound, 'deferred')
  const staleBefore = now - settings.sweep_after * 1000
  const swept = await phase('cleanup', () => mailbox.cleanup(found, { staleBefore, keep: settled.keep }))
  if (swept > 0) await state.update(key, (route) => (route.swept += swept))
  if (settled.lost.length > 0)
    ctx.logger.warn('round-trip mails lost', {
      ids: settled.lost.map((m) => m.id).join(','),
      lost_after: settings.lost_after,
    })

  // In flight from the moment the server accepted it: a failed QUIT must not lose track of a delivered mail.
  await sendMail(target, settings, ctx, phase, async (sent) => {
    await state.update(key, (route) => {
      route.inflight.push(sent)
    })
  })
  if (settled.lost.length > 0)
    throw new PhaseError(
      'detect',
      new Error(`${settled.lost.length} mail(s) not found within lost_after (${settings.lost_after}s)`),
    )
}

/** The round trip's own metrics. */
class RoundtripReport {
  readonly #registry: Registry
  constructor(registry: Registry) {
    this.#registry = registry
  }

  found(mail: FoundMail | undefined) {
    setGauge(this.#registry, M.found, mail ? 1 : 0)
    setGauge(this.#registry, M.foundInJunk, mail?.folder === 'junk' ? 1 : 0)
  }

  /**
   * accepted -> stored (the server's arrival), stored -> detected (our lag), and the delivery time:
   * sync: accepted -> detected; deferred: accepted -> stored (detection waited for the next scrape).
   */
  delivery(acceptedAt: number, mail: FoundMail, mode: 'sync' | 'deferred') {
    const seconds = (ms: number) => Math.max(0, ms) / 1000
    if (mail.storedAt !== undefined) {
      // Server stamps usually have whole-second resolution (and the server's clock): clamp into
      // [accepted, detected], so arrival is a lower bound and never negative.
      const storedAt = Math.min(Math.max(mail.storedAt, acceptedAt), mail.detectedAt)
      setGauge(this.#registry, M.arrival, seconds(storedAt - acceptedAt))
      setGauge(this.#registry, M.detectionLag, seconds(mail.detectedAt - storedAt))
    }
    const delivered = mode === 'sync' ? mail.detectedAt : mail.storedAt
    if (delivered !== undefined) setGauge(this.#registry, M.delivery, seconds(delivered - acceptedAt))
  }

  totals(route: RouteState) {
    setGauge(this.#registry, M.pending, route.inflight.length)
    counterOf(this.#registry, M.lost).inc(route.lost)
    counterOf(this.#registry, M.swept).inc(route.swept)
  }

  messages(count: number) {
    setGauge(this.#registry, M.messages, count)
  }
}
