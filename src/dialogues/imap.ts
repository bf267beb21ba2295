// The IMAP dialogue: resolve, connect, banner, CAPABILITY, STARTTLS or implicit TLS, login (openImap); every command timed.
import type { ImapFlow } from 'imapflow'
import type { ImapAuth, ImapSettings } from '../settings.ts'
import { legGauge, phaseMetric, setGauge, setInfo, type Labels, type MetricDef } from '../metrics.ts'
import type { PhaseTimer } from '../phases.ts'
import type { ProbeContext } from '../prober.ts'
import { connectTcp, startVerifiedTls } from '../protocol/connection.ts'
import { authMechanisms, hasCapability } from '../protocol/imap-reply.ts'
import {
  IMAP_PHASES,
  ImapSession,
  loadImapflow,
  type ImapPhase,
  type LoginPlan,
  type PreLogin,
} from '../protocol/imap-session.ts'
import { RESOLVE_METRICS, resolveHost, type Resolved } from './resolve.ts'
import { IMAP_MECHANISMS, chooseMechanisms, type ImapMechanism } from '../protocol/sasl.ts'
import { CredentialPolicyError, checkTransport, withCredentials } from './credentials.ts'
import { recordTlsMetrics, TLS_METRICS } from './tls-metrics.ts'
import { tlsName, type Target } from '../targets.ts'

const PROBE_IMAP_AUTH_MECHANISM_USED = legGauge(
  'probe_imap_auth_mechanism_used',
  'The mechanism that logged in',
  ['mechanism'],
)
const PROBE_IMAP_CAPABILITY_INFO = legGauge(
  'probe_imap_capability_info',
  'CAPABILITY atoms before login, before (stage="plain") and under (stage="tls") TLS',
  ['stage', 'capability'],
  { stage: ['plain', 'tls'] },
)
const PROBE_IMAP_AUTH_MECHANISM_ADVERTISED = legGauge(
  'probe_imap_auth_mechanism_advertised',
  'AUTH= mechanisms offered, by stage; usable="false" for those imapflow cannot speak (CRAM-MD5, SCRAM)',
  ['stage', 'mechanism', 'usable'],
  { stage: ['plain', 'tls'], usable: ['true', 'false'] },
)
const PROBE_IMAP_STARTTLS_ADVERTISED = legGauge(
  'probe_imap_starttls_advertised',
  'Whether the cleartext capability list offers STARTTLS',
)
const PROBE_IMAP_LOGINDISABLED_BEFORE_TLS = legGauge(
  'probe_imap_logindisabled_before_tls',
  'Whether the cleartext capability list says LOGINDISABLED',
)
const PROBE_IMAP_AUTH_OFFERED_BEFORE_TLS = legGauge(
  'probe_imap_auth_offered_before_tls',
  'Whether the cleartext server would take a password (no LOGINDISABLED, or AUTH=PLAIN/LOGIN)',
)
const PROBE_IMAP_DURATION_SECONDS = phaseMetric('imap', IMAP_PHASES, true)

/** Every metric the IMAP dialogue sets (with the resolve and TLS ones). */
export const IMAP_DIALOGUE_METRICS = [
  PROBE_IMAP_DURATION_SECONDS,
  PROBE_IMAP_CAPABILITY_INFO,
  PROBE_IMAP_AUTH_MECHANISM_ADVERTISED,
  PROBE_IMAP_AUTH_MECHANISM_USED,
  PROBE_IMAP_STARTTLS_ADVERTISED,
  PROBE_IMAP_LOGINDISABLED_BEFORE_TLS,
  PROBE_IMAP_AUTH_OFFERED_BEFORE_TLS,
  ...RESOLVE_METRICS,
  ...TLS_METRICS,
]

export { IMAP_PHASES, type ImapPhase }

/** What imapflow can log in with: no CRAM-MD5 and no SCRAM (it has no hook for other SASL mechanisms). */
const IMPLEMENTED = IMAP_MECHANISMS

/** A logged-in IMAP connection (from openImap). */
export interface ImapConnection {
  /**
   * The logged-in client. Its LIST, LSUB, SELECT, EXAMINE and STATUS still count as phase select and
   * LOGOUT as logout; anything else (SEARCH, FETCH, STORE, EXPUNGE, IDLE...) is the caller's to time,
   * unless run inside session.during(phase).
   */
  readonly client: ImapFlow
  /** during(phase, step), call(step) (deadline + server text), close(); closes itself at the deadline. */
  readonly session: ImapSession
  /** probe_imap_duration_seconds, with the leg given to openImap (labels.leg). */
  readonly phase: PhaseTimer<ImapPhase>
  /** The mechanism that logged in (IMAP-LOGIN is the LOGIN command); undefined after a PREAUTH greeting. */
  readonly mechanism: string | undefined
}

/**
 * Everything up to and including the login, timed in probe_imap_duration_seconds{phase, leg} (leg: labels.leg, when given),
 * with the capability, mechanism, TLS and DNS facts recorded under the same extra labels.
 * With auth.try_all_mechanisms a refused login is retried with the next mechanism on a new
 * connection (imapflow clients are single-use); the phases then add up over the connections.
 */
export async function openImap(
  target: Target,
  settings: ImapSettings,
  ctx: ProbeContext,
  labels: Labels = {},
): Promise<ImapConnection> {
  const phase = ctx.phases.timer(PROBE_IMAP_DURATION_SECONDS, labels['leg'])
  return withCredentials(settings.auth, ctx, phase, (auth) =>
    logIn(target, { ...settings, auth }, ctx, labels, phase),
  )
}

/** openImap with the credentials in hand (an access token fetched, with oauth2). */
async function logIn(
  target: Target,
  settings: ImapSettings,
  ctx: ProbeContext,
  labels: Labels,
  phase: PhaseTimer<ImapPhase>,
): Promise<ImapConnection> {
  const address = await phase('resolve', () => resolveHost(target.host, settings, ctx, labels))
  const refused: ImapMechanism[] = []
  for (;;) {
    const session = await openSession(target, address, settings, ctx, phase, labels, refused)
    try {
      await session.connect()
    } catch (err) {
      session.close()
      const refusedNow = session.loginRefused ? session.chosen : undefined
      if (!settings.auth.try_all_mechanisms || refusedNow === undefined) throw err
      refused.push(refusedNow)
      const offered = session.capabilities.tls ?? session.capabilities.plain ?? []
      if (mechanismOrder(settings.auth, offered).order.every((m) => refused.includes(m))) throw err
      ctx.logger.info('login refused; trying the next mechanism on a new connection', {
        mechanism: refusedNow,
      })
      continue
    } finally {
      recordCapabilities(ctx, session, labels)
    }
    const mechanism = session.mechanismUsed
    if (mechanism !== undefined && mechanism !== session.chosen)
      ctx.logger.warn('imapflow logged in with another mechanism than chosen', {
        chosen: session.chosen,
        mechanism,
      })
    if (mechanism !== undefined)
      setInfo(ctx.registry, PROBE_IMAP_AUTH_MECHANISM_USED, [{ mechanism }], labels)
    return { client: session.client, session, phase, mechanism }
  }
}

/** TCP (+ implicit TLS), then an ImapSession on that socket whose login follows our credential rules. */
async function openSession(
  target: Target,
  address: Resolved,
  settings: ImapSettings,
  ctx: ProbeContext,
  phase: PhaseTimer<ImapPhase>,
  labels: Labels,
  refused: readonly ImapMechanism[],
): Promise<ImapSession> {
  const imapflow = await loadImapflow()
  let socket = await phase('connect', () =>
    connectTcp(address.address, target.port, ctx.signal, settings.source_ip_address),
  )
  ctx.logger.debug('connected', { address: address.address, port: target.port })
  if (settings.tls === 'implicit') {
    const plain = socket
    socket = await phase('tls', () =>
      startVerifiedTls(plain, tlsName(target), settings.tls_config, ctx.signal, (secure) =>
        recordTlsMetrics(secure, ctx.registry, labels),
      ),
    )
  }
  return new ImapSession({
    imapflow,
    socket,
    host: tlsName(target),
    port: target.port,
    mode: settings.tls,
    tlsConfig: settings.tls_config,
    signal: ctx.signal,
    logger: ctx.logger,
    hooks: {
      addPhase: (name, seconds) => phase.add(name, seconds),
      enterPhase: (name) => phase.enter(name),
      fail: (name, cause) => phase.error(name, cause),
      onTls: (secure) => recordTlsMetrics(secure, ctx.registry, labels),
      login: (state) => chooseLogin(settings.auth, state, refused),
    },
  })
}

/**
 * The credential policy of every dialogue, and LOGINDISABLED respected. Each try of try_all_mechanisms
 * is a new connection (imapflow clients are single-use), so the loop is openImap's, not tryMechanisms.
 */
function chooseLogin(auth: ImapAuth, state: PreLogin, refused: readonly ImapMechanism[]): LoginPlan {
  checkTransport(state, auth)
  const choice = mechanismOrder(auth, state.capabilities)
  const mechanism = choice.order.find((m) => !refused.includes(m))
  if (mechanism === undefined) {
    const disabled = hasCapability(state.capabilities, 'LOGINDISABLED')
      ? ' (LOGINDISABLED: no LOGIN command)'
      : ''
    throw new CredentialPolicyError('no_mechanism', (choice.reason ?? 'no usable mechanism left') + disabled)
  }
  const secret = mechanism === 'XOAUTH2' || mechanism === 'OAUTHBEARER' ? auth.oauth2_token : auth.password
  return { mechanism, user: auth.username, secret: secret?.reveal() ?? '' }
}

/** The configured preference (or strongest first) among what the server offers; the LOGIN command unless LOGINDISABLED. */
function mechanismOrder(auth: ImapAuth, capabilities: readonly string[]) {
  const advertised = authMechanisms(capabilities)
  if (!hasCapability(capabilities, 'LOGINDISABLED')) advertised.push('IMAP-LOGIN')
  return chooseMechanisms(auth, advertised, IMPLEMENTED)
}

/** Capabilities and mechanisms per stage, and what the cleartext list says about TLS and passwords. */
function recordCapabilities(ctx: ProbeContext, session: ImapSession, labels: Labels) {
  const { registry } = ctx
  for (const stage of ['plain', 'tls'] as const) {
    const list = session.capabilities[stage]
    if (!list) continue
    setInfo(
      registry,
      PROBE_IMAP_CAPABILITY_INFO,
      list.map((capability) => ({ stage, capability })),
      labels,
    )
    const mechanisms = authMechanisms(list)
    if (mechanisms.length > 0)
      setInfo(
        registry,
        PROBE_IMAP_AUTH_MECHANISM_ADVERTISED,
        mechanisms.map((mechanism) => ({
          stage,
          mechanism,
          usable: String((IMPLEMENTED as readonly string[]).includes(mechanism)),
        })),
        labels,
      )
  }
  const plain = session.capabilities.plain
  if (!plain) return
  const has = (name: string) => hasCapability(plain, name)
  const flag = (metric: MetricDef, value: boolean) => setGauge(registry, metric, value ? 1 : 0, labels)
  flag(PROBE_IMAP_STARTTLS_ADVERTISED, has('STARTTLS'))
  flag(PROBE_IMAP_LOGINDISABLED_BEFORE_TLS, has('LOGINDISABLED'))
  flag(PROBE_IMAP_AUTH_OFFERED_BEFORE_TLS, !has('LOGINDISABLED') || has('AUTH=PLAIN') || has('AUTH=LOGIN'))
}
