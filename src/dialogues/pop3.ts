// The POP3 dialogue: resolve, connect, banner, CAPA, STLS or implicit TLS, login (openPop3); STAT facts. Every command timed.
import type { Pop3Settings } from '../settings.ts'
import { ProtocolError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import { setGauge, setInfo, type Labels, legGauge, phaseMetric } from '../metrics.ts'
import type { PhaseTimer } from '../phases.ts'
import type { ProbeContext } from '../prober.ts'
import { checkVerified, connectTcp, ticketWait } from '../protocol/connection.ts'
import { Pop3Client, type Capabilities, type Pop3Greeting } from '../protocol/pop3-client.ts'
import { saslMechanisms } from '../protocol/pop3-reply.ts'
import { RESOLVE_METRICS, resolveHost } from './resolve.ts'
import { POP3_MECHANISMS } from '../protocol/sasl.ts'
import { planLogin, tryMechanisms, withCredentials } from './credentials.ts'
import { recordTlsMetrics, TLS_METRICS } from './tls-metrics.ts'
import { tlsName, type Target } from '../targets.ts'

export const POP3_PHASES = [
  'token',
  'resolve',
  'connect',
  'tls',
  'banner',
  'capa',
  'stls',
  'capa_tls',
  'auth',
  'stat',
  'list',
  'quit',
] as const
export type Pop3Phase = (typeof POP3_PHASES)[number]

const PROBE_POP3_CAPABILITY_INFO = legGauge(
  'probe_pop3_capability_info',
  'CAPA keywords the server announced, before (stage="plain") and after (stage="tls") TLS',
  ['stage', 'capability'],
  { stage: ['plain', 'tls'] },
)
const PROBE_POP3_AUTH_MECHANISM_ADVERTISED = legGauge(
  'probe_pop3_auth_mechanism_advertised',
  'Login mechanisms the server offers (SASL, USER, APOP), by stage (plain before TLS, tls after)',
  ['stage', 'mechanism'],
  { stage: ['plain', 'tls'] },
)
const PROBE_POP3_STARTTLS_ADVERTISED = legGauge(
  'probe_pop3_starttls_advertised',
  'Whether the server offered STLS before TLS',
)
const PROBE_POP3_AUTH_OFFERED_BEFORE_TLS = legGauge(
  'probe_pop3_auth_offered_before_tls',
  'Whether the server offered USER or SASL PLAIN/LOGIN on the cleartext connection',
)
const PROBE_POP3_AUTH_MECHANISM_USED = legGauge(
  'probe_pop3_auth_mechanism_used',
  'The mechanism that logged in',
  ['mechanism'],
)
const PROBE_POP3_MESSAGES = legGauge('probe_pop3_messages', 'Messages in the maildrop (STAT)')
const PROBE_POP3_SIZE_BYTES = legGauge('probe_pop3_size_bytes', 'Size of the maildrop in bytes (STAT)')
const PROBE_POP3_DURATION_SECONDS = phaseMetric('pop3', POP3_PHASES, true)

/** Every metric the POP3 dialogue sets (with the resolve and TLS ones). */
export const POP3_DIALOGUE_METRICS = [
  PROBE_POP3_DURATION_SECONDS,
  PROBE_POP3_CAPABILITY_INFO,
  PROBE_POP3_AUTH_MECHANISM_ADVERTISED,
  PROBE_POP3_AUTH_MECHANISM_USED,
  PROBE_POP3_STARTTLS_ADVERTISED,
  PROBE_POP3_AUTH_OFFERED_BEFORE_TLS,
  PROBE_POP3_MESSAGES,
  PROBE_POP3_SIZE_BYTES,
  ...RESOLVE_METRICS,
  ...TLS_METRICS,
]

/**
 * probe_pop3_duration_seconds{phase}, with `leg` when `labels` has one (a round trip's leg; its phases
 * are then named receive_<phase>); make one and pass it to each openPop3 to sum reconnects.
 */
export function pop3PhaseTimer(ctx: ProbeContext, labels: Labels = {}): PhaseTimer<Pop3Phase> {
  return ctx.phases.timer(PROBE_POP3_DURATION_SECONDS, labels['leg'])
}

/**
 * Resolve, connect, (implicit TLS,) banner, CAPA, (STLS, TLS, CAPA,) login: each step timed into `phase`,
 * TLS and capability facts recorded with `labels`. The caller runs its commands, then quit(); on
 * failure the connection is already closed.
 */
export async function openPop3(
  target: Target,
  settings: Pop3Settings,
  ctx: ProbeContext,
  labels: Labels = {},
  phase: PhaseTimer<Pop3Phase> = pop3PhaseTimer(ctx, labels),
): Promise<{ client: Pop3Client; phase: PhaseTimer<Pop3Phase> }> {
  return withCredentials(settings.auth, ctx, phase, (auth) =>
    logIn(target, { ...settings, auth }, ctx, labels, phase),
  )
}

/** openPop3 with the credentials in hand (an access token fetched, with oauth2). */
async function logIn(
  target: Target,
  settings: Pop3Settings,
  ctx: ProbeContext,
  labels: Labels,
  phase: PhaseTimer<Pop3Phase>,
): Promise<{ client: Pop3Client; phase: PhaseTimer<Pop3Phase> }> {
  const { signal, logger } = ctx
  const facts = new Pop3Facts(ctx, labels)
  const address = await phase('resolve', () => resolveHost(target.host, settings, ctx, labels))
  const socket = await phase('connect', () =>
    connectTcp(address.address, target.port, signal, settings.source_ip_address),
  )
  logger.debug('connected', { address: address.address, port: target.port })
  const client = new Pop3Client(socket, { signal, logger })
  /** The handshake, timed as phase tls; after STLS (the client speaks next), the ticket wait apart. */
  const secure = async (afterStls: boolean) => {
    const start = performance.now()
    const tls = await phase('tls', () => client.startTls(tlsName(target), settings.tls_config))
    recordTlsMetrics(tls, ctx.registry, labels)
    await phase.named('tls', async () => {
      if (afterStls) await ticketWait(tls, performance.now() - start, logger, () => client.unread)
      checkVerified(tls, settings.tls_config)
    })
  }
  try {
    if (settings.tls === 'implicit') await secure(false)
    const greeting = await phase('banner', () => client.greeting())
    const capabilities = await phase('capa', () => capa(client, logger))
    facts.capabilities(client.secure ? 'tls' : 'plain', capabilities, greeting)

    if (settings.tls === 'stls' || settings.tls === 'stls_opportunistic') {
      // A server without CAPA cannot advertise STLS; when STLS is required, ask anyway and let it answer.
      const offered = capabilities ? capabilities.has('STLS') : settings.tls === 'stls'
      if (offered) {
        await phase('stls', () => client.stls())
        await secure(true)
        facts.capabilities('tls', await phase('capa_tls', () => capa(client, logger)), greeting)
      } else if (settings.tls === 'stls') {
        throw phase.error('stls', new Error('STLS is required (tls: stls) but the server did not offer it'))
      }
    }

    await phase('auth', () => login(client, settings, logger, facts))
    return { client, phase }
  } catch (err) {
    client.close()
    throw err
  }
}

/** CAPA, or undefined when the server predates it (-ERR): then nothing is advertised, and USER is assumed. */
async function capa(client: Pop3Client, logger: Logger): Promise<Capabilities | undefined> {
  try {
    return await client.capa()
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err
    logger.info('server does not support CAPA', { reply: err.reply })
    return undefined
  }
}

/** What the server offers to log in with: its SASL mechanisms, USER, and APOP when the greeting has a timestamp. */
function advertisedMechanisms(capabilities: Capabilities | undefined, greeting: Pop3Greeting | undefined) {
  const offered = capabilities ? saslMechanisms(capabilities) : []
  if (!capabilities || capabilities.has('USER')) offered.push('USER')
  if (greeting?.timestamp !== undefined) offered.push('APOP')
  return offered
}

async function login(client: Pop3Client, settings: Pop3Settings, logger: Logger, facts: Pop3Facts) {
  const auth = settings.auth
  const tls = client.tlsSocket
  const order = planLogin(
    auth,
    { secure: tls !== undefined, verified: tls?.authorized === true },
    advertisedMechanisms(client.capabilities, client.greetingInfo),
    POP3_MECHANISMS,
  )
  const credentials = {
    username: auth.username,
    password: auth.password?.reveal(),
    token: auth.oauth2_token?.reveal(),
  }
  facts.used(await tryMechanisms(order, (mechanism) => client.login(mechanism, credentials), logger))
}

/** The facts a POP3 probe reports besides phase durations. */
class Pop3Facts {
  readonly #ctx: ProbeContext
  readonly #labels: Labels
  constructor(ctx: ProbeContext, labels: Labels) {
    this.#ctx = ctx
    this.#labels = labels
  }

  capabilities(stage: 'plain' | 'tls', capabilities: Capabilities | undefined, greeting: Pop3Greeting) {
    const { registry } = this.#ctx
    if (capabilities)
      setInfo(
        registry,
        PROBE_POP3_CAPABILITY_INFO,
        [...capabilities.keys()].map((capability) => ({ stage, capability })),
        this.#labels,
      )
    const mechanisms = advertisedMechanisms(capabilities, greeting)
    setInfo(
      registry,
      PROBE_POP3_AUTH_MECHANISM_ADVERTISED,
      mechanisms.map((mechanism) => ({ stage, mechanism })),
      this.#labels,
    )
    if (stage !== 'plain') return
    // Without CAPA nothing is advertised, and USER is what a client would use (RFC 1939).
    setGauge(registry, PROBE_POP3_STARTTLS_ADVERTISED, capabilities?.has('STLS') ? 1 : 0, this.#labels)
    const cleartext = mechanisms.some((m) => m === 'USER' || m === 'PLAIN' || m === 'LOGIN')
    setGauge(registry, PROBE_POP3_AUTH_OFFERED_BEFORE_TLS, cleartext ? 1 : 0, this.#labels)
  }

  used(mechanism: string) {
    setInfo(this.#ctx.registry, PROBE_POP3_AUTH_MECHANISM_USED, [{ mechanism }], this.#labels)
  }
}

/** probe_pop3_messages and probe_pop3_size_bytes from a STAT reply. */
export function recordStat(ctx: ProbeContext, stat: { messages: number; size: number }, labels: Labels = {}) {
  const { registry } = ctx
  setGauge(registry, PROBE_POP3_MESSAGES, stat.messages, labels)
  setGauge(registry, PROBE_POP3_SIZE_BYTES, stat.size, labels)
}
