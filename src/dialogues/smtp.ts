// The SMTP dialogue every prober uses: banner, EHLO, STARTTLS or implicit TLS, AUTH, a mail, QUIT; every command timed.
import type tls from 'node:tls'
import type { SmtpSettings } from '../settings.ts'
import { ProtocolError, findCause } from '../errors.ts'
import { setGauge, setInfo, type Labels, legGauge, phaseMetric } from '../metrics.ts'
import type { PhaseTimer } from '../phases.ts'
import type { ProbeContext } from '../prober.ts'
import { connectTcp, startVerifiedTls } from '../protocol/connection.ts'
import type { ProbeMessage } from '../protocol/message.ts'
import { RESOLVE_METRICS, resolveHost } from './resolve.ts'
import { SMTP_MECHANISMS } from '../protocol/sasl.ts'
import { CredentialPolicyError, planLogin, tryMechanisms, withCredentials } from './credentials.ts'
import { customAuth } from '../protocol/smtp-auth.ts'
import { authMechanisms, ehloExtensions, parseReply, queueId } from '../protocol/smtp-reply.ts'
import { SmtpSession, type SmtpPhase } from '../protocol/smtp-session.ts'
import { recordTlsMetrics, TLS_METRICS } from './tls-metrics.ts'
import { tlsName, type Target } from '../targets.ts'

export const SMTP_PHASES: readonly SmtpPhase[] = [
  'token',
  'resolve',
  'connect',
  'tls',
  'banner',
  'ehlo',
  'starttls',
  'ehlo_tls',
  'auth',
  'mail',
  'rcpt',
  'data',
  'quit',
]

const PROBE_SMTP_AUTH_RETRIED_WITH_STARTTLS = legGauge(
  'probe_smtp_auth_retried_with_starttls',
  'Whether AUTH was retried over a new STARTTLS connection (exported when retry_with_starttls is set)',
)
const PROBE_SMTP_STATUS_CODE = legGauge('probe_smtp_status_code', 'Last SMTP reply code the server sent')
const PROBE_SMTP_ENHANCED_STATUS_CODE = legGauge(
  'probe_smtp_enhanced_status_code',
  'Enhanced status code (RFC 3463) of the last reply, as a number: 5.7.8 -> 578; 0 when it had none',
)
const PROBE_SMTP_EHLO_EXTENSION_INFO = legGauge(
  'probe_smtp_ehlo_extension_info',
  'EHLO keywords the server announced, before (stage="plain") and after (stage="tls") TLS',
  ['stage', 'extension'],
  { stage: ['plain', 'tls'] },
)
const PROBE_SMTP_AUTH_MECHANISM_ADVERTISED = legGauge(
  'probe_smtp_auth_mechanism_advertised',
  'SASL mechanisms the server offers, by stage (plain before TLS, tls after)',
  ['stage', 'mechanism'],
  { stage: ['plain', 'tls'] },
)
const PROBE_SMTP_STARTTLS_ADVERTISED = legGauge(
  'probe_smtp_starttls_advertised',
  'Whether the server offered STARTTLS before TLS',
)
const PROBE_SMTP_AUTH_OFFERED_BEFORE_TLS = legGauge(
  'probe_smtp_auth_offered_before_tls',
  'Whether the server offered AUTH on the cleartext connection',
)
const PROBE_SMTP_AUTH_MECHANISM_USED = legGauge(
  'probe_smtp_auth_mechanism_used',
  'The SASL mechanism that authenticated',
  ['mechanism'],
)
const PROBE_SMTP_DEFERRED = legGauge(
  'probe_smtp_deferred',
  'Whether the test mail was deferred: the probe failed on a 4xx reply to MAIL, RCPT, DATA or the end of data (exported when a mail is sent)',
)
const PROBE_SMTP_DURATION_SECONDS = phaseMetric('smtp', SMTP_PHASES, true)

/** Every metric the SMTP dialogue sets (with the resolve and TLS ones). */
export const SMTP_DIALOGUE_METRICS = [
  PROBE_SMTP_DURATION_SECONDS,
  PROBE_SMTP_STATUS_CODE,
  PROBE_SMTP_ENHANCED_STATUS_CODE,
  PROBE_SMTP_EHLO_EXTENSION_INFO,
  PROBE_SMTP_AUTH_MECHANISM_ADVERTISED,
  PROBE_SMTP_AUTH_MECHANISM_USED,
  PROBE_SMTP_STARTTLS_ADVERTISED,
  PROBE_SMTP_AUTH_OFFERED_BEFORE_TLS,
  PROBE_SMTP_AUTH_RETRIED_WITH_STARTTLS,
  PROBE_SMTP_DEFERRED,
  ...RESOLVE_METRICS,
  ...TLS_METRICS,
]

/** How long a failed probe waits for the answer to its closing QUIT. */
const QUIT_WAIT_MS = 500

export interface SmtpResult {
  /** Set when a mail was sent: when the final reply to DATA arrived (ms since epoch). */
  acceptedAt?: number
  queueId?: string
}

/** Credentials could not be used on this connection; with retry_with_starttls we try again over TLS. */
class AuthUnavailable extends Error {
  override name = 'AuthUnavailable'
}

export interface Mail {
  from: string
  to: string[]
  message: ProbeMessage
}

/** The whole SMTP dialogue; the round trip calls it too, with its own message and a leg label. */
export async function smtpConversation(
  target: Target,
  settings: SmtpSettings,
  ctx: ProbeContext,
  options: {
    mail: Mail | undefined
    labels?: Labels
    /**
     * Called as soon as DATA is accepted, before QUIT: the mail is on its way even if the connection
     * fails now (a round trip records it as in flight here, so that it can still be counted as lost).
     */
    onAccepted?: (result: SmtpResult) => void | Promise<void>
  },
): Promise<SmtpResult> {
  const labels = options.labels ?? {}
  const phase = ctx.phases.timer(PROBE_SMTP_DURATION_SECONDS, labels['leg'])
  const facts = new SmtpFacts(ctx, labels)
  const retried = (value: number) =>
    setGauge(ctx.registry, PROBE_SMTP_AUTH_RETRIED_WITH_STARTTLS, value, labels)
  if (settings.retry_with_starttls) retried(0)
  // Exported whenever a mail is to be sent, so that the series exists for rules before any deferral.
  if (options.mail) facts.deferred(0)
  return withCredentials(settings.auth, ctx, phase, async (auth) => {
    const withAuth = { ...settings, auth }
    try {
      return await attempt(target, withAuth, settings.tls, ctx, phase, facts, options)
    } catch (err) {
      const cleartext = settings.tls === 'none' || settings.tls === 'starttls_opportunistic'
      if (!(settings.retry_with_starttls && cleartext && findCause(err, AuthUnavailable))) throw err
      ctx.logger.info('no AUTH worked in the clear; reconnecting with STARTTLS', {
        reason: (err as Error).message,
      })
      retried(1)
      return attempt(target, withAuth, 'starttls', ctx, phase, facts, options)
    }
  })
}

async function attempt(
  target: Target,
  settings: SmtpSettings,
  mode: SmtpSettings['tls'],
  ctx: ProbeContext,
  phase: PhaseTimer<SmtpPhase>,
  facts: SmtpFacts,
  { mail, onAccepted }: { mail: Mail | undefined; onAccepted?: (result: SmtpResult) => void | Promise<void> },
): Promise<SmtpResult> {
  const { signal, logger } = ctx
  const address = await phase('resolve', () => resolveHost(target.host, settings, ctx, facts.labels))
  let socket = await phase('connect', () =>
    connectTcp(address.address, target.port, signal, settings.source_ip_address),
  )
  logger.debug('connected', { address: address.address, port: target.port })
  if (mode === 'implicit') {
    const plain = socket
    socket = await phase('tls', () =>
      startVerifiedTls(plain, tlsName(target), settings.tls_config, signal, (secure) => facts.tls(secure)),
    )
  }

  const session = new SmtpSession({
    socket,
    host: tlsName(target),
    secured: mode === 'implicit',
    mode,
    tlsConfig: settings.tls_config,
    ehloName: settings.ehlo,
    signal,
    logger,
    customAuth: customAuth(settings.auth),
    hooks: {
      addPhase: (name, seconds) => phase.add(name, seconds),
      enterPhase: (name) => phase.enter(name),
      onReply: (_phase, reply) => facts.reply(reply.code, reply.enhanced),
      onTls: (secure) => facts.tls(secure),
    },
  })
  /** nodemailer bundles several commands per call: a failure is named by the phase the session was in. */
  const inPhase = <T>(step: () => Promise<T>) => phase.named(undefined, step)
  try {
    try {
      await inPhase(() => session.connect())
    } finally {
      // Also when STARTTLS or its certificate failed: what the server offered in the clear is known.
      facts.ehlo(session.ehloReplies)
    }
    if (mode === 'starttls' && !session.secure)
      throw phase.error(
        'starttls',
        new Error('STARTTLS is required (tls: starttls) but the server did not offer it'),
      )

    // Named explicitly: a refusal (no TLS, no common mechanism) happens before any AUTH line is sent.
    if (settings.auth) await phase.named('auth', () => authenticate(session, settings, facts, ctx))

    let result: SmtpResult = {}
    if (mail) {
      const envelope = { from: mail.from, to: mail.to }
      const info = await inPhase(() => session.send(envelope, mail.message.text, settings.pipelining)).catch(
        (err: unknown) => {
          throw facts.mailFailed(err)
        },
      )
      result = { acceptedAt: Date.now() }
      const reply = /^\d{3}[ -]/.test(info.response) ? info.response : `250 ${info.response}`
      const id = queueId(reply.slice(4))
      if (id !== undefined) result.queueId = id
      logger.info('test mail accepted', { message_id: mail.message.messageId, queue_id: id, reply })
      await onAccepted?.(result)
      if (info.rejected.length > 0) throw facts.mailFailed(phase.error('rcpt', partialRefusal(info)))
    }
    await inPhase(() => session.quit())
    return result
  } finally {
    // A failed probe still ends its session with QUIT while the server is there to hear it.
    await session.quitQuietly(QUIT_WAIT_MS)
    session.close()
  }
}

async function authenticate(
  session: SmtpSession,
  settings: SmtpSettings,
  facts: SmtpFacts,
  ctx: ProbeContext,
) {
  const auth = settings.auth
  if (!auth) return
  const last = session.ehloReplies[session.ehloReplies.length - 1]
  const advertised = last ? authMechanisms(last.reply) : []
  const socket = session.socket as tls.TLSSocket
  const transport = { secure: session.secure, verified: session.secure && socket.authorized }
  try {
    if (advertised.length === 0)
      throw new CredentialPolicyError('not_offered', 'the server offers no AUTH on this connection')
    const order = planLogin(auth, transport, advertised, SMTP_MECHANISMS)
    const used = await tryMechanisms(
      order,
      (method) => session.login({ user: auth.username, pass: auth.password?.reveal(), method }),
      ctx.logger,
    )
    facts.used(used)
  } catch (err) {
    // In the clear, a refusal of either side may go away over TLS (retry_with_starttls); over TLS
    // already, a new STARTTLS connection would meet the same server.
    const refused =
      err instanceof ProtocolError || (err instanceof CredentialPolicyError && err.reason !== 'unverified')
    if (transport.secure || !refused) throw err
    throw new AuthUnavailable((err as Error).message, { cause: err })
  }
}

/**
 * Some recipients were accepted (the mail is on its way to them), others refused. The refusal reported is a
 * permanent one if there is any, so that the mail counts as deferred only when every refusal was a 4xx.
 */
function partialRefusal(info: Awaited<ReturnType<SmtpSession['send']>>): ProtocolError {
  const refusals = info.rejectedErrors ?? []
  const refusal = refusals.find((e) => (e.responseCode ?? 0) >= 500) ?? refusals[0]
  const expected = `all recipients accepted (refused: ${info.rejected.join(', ')})`
  const reply = refusal?.response?.split('\n').pop()
  return reply === undefined
    ? new ProtocolError(expected, 'no reply')
    : new ProtocolError(expected, reply, refusal?.responseCode)
}

/** The facts an SMTP probe reports besides phase durations. */
class SmtpFacts {
  readonly labels: Labels
  readonly #ctx: ProbeContext
  constructor(ctx: ProbeContext, labels: Labels) {
    this.#ctx = ctx
    this.labels = labels
  }

  reply(code: number, enhanced: string | undefined) {
    setGauge(this.#ctx.registry, PROBE_SMTP_STATUS_CODE, code, this.labels)
    // Always set with the reply code, so the two describe the same reply (0: that reply had none).
    setGauge(
      this.#ctx.registry,
      PROBE_SMTP_ENHANCED_STATUS_CODE,
      enhanced === undefined ? 0 : Number(enhanced.replaceAll('.', '')),
      this.labels,
    )
  }

  tls(socket: tls.TLSSocket) {
    recordTlsMetrics(socket, this.#ctx.registry, this.labels)
  }

  ehlo(replies: readonly { tls: boolean; reply: string }[]) {
    const { registry } = this.#ctx
    for (const { tls, reply } of replies) {
      const stage = tls ? 'tls' : 'plain'
      setInfo(
        registry,
        PROBE_SMTP_EHLO_EXTENSION_INFO,
        ehloExtensions(reply).map((e) => ({ stage, extension: e.keyword })),
        this.labels,
      )
      for (const mechanism of authMechanisms(reply))
        setInfo(registry, PROBE_SMTP_AUTH_MECHANISM_ADVERTISED, [{ stage, mechanism }], this.labels)
    }
    const plain = replies.find((r) => !r.tls)
    if (plain) {
      const ext = ehloExtensions(plain.reply).map((e) => e.keyword)
      setGauge(registry, PROBE_SMTP_STARTTLS_ADVERTISED, ext.includes('STARTTLS') ? 1 : 0, this.labels)
      setGauge(registry, PROBE_SMTP_AUTH_OFFERED_BEFORE_TLS, ext.includes('AUTH') ? 1 : 0, this.labels)
    }
  }

  deferred(value: 0 | 1) {
    setGauge(this.#ctx.registry, PROBE_SMTP_DEFERRED, value, this.labels)
  }

  /**
   * The test mail failed: with a reply (MAIL, RCPT, DATA or the end of data), that reply becomes the status
   * code (with PIPELINING a later reply, such as DATA's 554 after a refused RCPT, would hide it), and a 4xx
   * makes the mail deferred: greylisting or a full queue, which a sender would retry. Returns `err`.
   */
  mailFailed(err: unknown): unknown {
    const refusal = findCause(err, ProtocolError)
    if (refusal?.code === undefined) return err
    const reply = parseReply(refusal.reply)
    this.reply(refusal.code, reply?.code === refusal.code ? reply.enhanced : undefined)
    this.deferred(refusal.code >= 400 && refusal.code < 500 ? 1 : 0)
    return err
  }

  used(mechanism: string) {
    setInfo(this.#ctx.registry, PROBE_SMTP_AUTH_MECHANISM_USED, [{ mechanism }], this.labels)
  }
}
