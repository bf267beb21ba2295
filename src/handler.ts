// One probe: target check, deadline, fresh registry, probe_success/duration/failed phase, debug text, history.
import {
  Registry,
  type MetricObjectWithValues,
  type MetricValue,
  type OpenMetricsContentType,
  type PrometheusContentType,
} from 'prom-client'
import { stringify } from 'yaml'
import { defaultPort, redactModule, type Module } from './config.ts'
import { DeadlineError, describeFailure } from './errors.ts'
import type { ExporterMetrics } from './exporter-metrics.ts'
import type { History } from './history.ts'
import type { AuthBackoff, BackedOff, IntervalGate, ProbeSlots } from './limits.ts'
import { reject, type Rejection } from './rejections.ts'
import { createProbeLogger, type Logger } from './logger.ts'
import { credentialsRefused } from './dialogues/credentials.ts'
import { foldRegistries, gaugeOf, setGauge } from './metrics.ts'
import { ProbePhases } from './phases.ts'
import {
  PROBE_AUTH_BACKOFF,
  PROBE_DURATION,
  PROBE_FAILED_PHASE,
  PROBE_SUCCESS,
  PROBE_TIMEOUT,
} from './prober.ts'
import { probeMailExchangers } from './mx.ts'
import { logsIn, mxPlanOf, probesMailExchangers, runProber, type ProberStates } from './probers/index.ts'
import {
  formatTarget,
  isMxTarget,
  parseProbeTarget,
  parseServerName,
  targetAllowed,
  type ProbeTarget,
  type Target,
} from './targets.ts'

export interface HandlerDeps {
  logger: Logger
  history: History
  metrics: ExporterMetrics
  /** Seconds kept back from Prometheus' scrape timeout (--timeout-offset). */
  timeoutOffset: number
  /** What the probers keep across probes (the round trip's in-flight mails). */
  states: ProberStates
  /** --probe.max-concurrent; unlimited when absent. */
  slots?: ProbeSlots
  /** min_interval per module and target; not enforced when absent. */
  gate?: IntervalGate
  /** auth_backoff per module and target; not enforced when absent. */
  backoff?: AuthBackoff<RefusedAttempt>
}

export interface ProbeRequest {
  moduleName: string
  module: Module
  /** The target query parameter, if given. */
  target: string | undefined
  /** The hostname query parameter: the name for SNI and certificate checks instead of the target host. */
  hostname?: string | undefined
  /** X-Prometheus-Scrape-Timeout-Seconds, if sent. */
  scrapeTimeout: string | undefined
  debug: boolean
  openMetrics: boolean
  /** Aborts when the HTTP client goes away. */
  clientSignal?: AbortSignal
}

/** What one probe found, for the one-shot command (the HTTP answer is `body`). */
export interface ProbeOutcome {
  success: boolean
  failedPhase: string | undefined
  /** Why it failed, as the process log says it. */
  error: string | undefined
  seconds: number
  target: string
  /** The probe's (bounded) debug transcript. */
  transcript: readonly string[]
  /** The metrics the answer holds, as prom-client's JSON (made on demand). */
  metrics(): Promise<MetricObjectWithValues<MetricValue<string>>[]>
}

export type ProbeResponse =
  { status: 200; contentType: string; body: string; outcome: ProbeOutcome } | Rejection

const TEXT = 'text/plain; charset=utf-8'

/** min(module timeout, scrape timeout - offset), as blackbox's getTimeout; a string says what is wrong. */
export function probeTimeout(
  moduleTimeout: number,
  header: string | undefined,
  offset: number,
): number | string {
  if (header === undefined || header === '') return moduleTimeout
  const scrape = Number(header)
  if (!Number.isFinite(scrape) || scrape <= 0)
    return `X-Prometheus-Scrape-Timeout-Seconds must be a positive number of seconds, got "${header}"`
  const budget = scrape - offset > 0 ? scrape - offset : scrape
  return Math.min(moduleTimeout, budget)
}

/** The target to probe, or the 400/403 answer explaining why not (decided before any connection). */
export function chooseTarget(
  req: Pick<ProbeRequest, 'moduleName' | 'module' | 'target' | 'hostname'>,
): ProbeTarget | Rejection {
  const port = defaultPort(req.module)
  const text = req.target ?? req.module.target
  if (text === undefined)
    return reject(400, 'missing_target', 'target parameter is missing (e.g. target=mail.example.com:587)')
  const target = parseProbeTarget(text, port)
  if (typeof target === 'string') return reject(400, 'invalid_target', `invalid target: ${target}`)
  if (isMxTarget(target) && !probesMailExchangers(req.module))
    return reject(
      400,
      'invalid_target',
      `invalid target: mx: targets are for smtp modules, and module ${req.moduleName} is ${req.module.prober}`,
    )
  if (req.module.target !== undefined) {
    // Parsed at load; a module without it (which the config check does not let through) allows nothing.
    const fixed = req.module.fixed_target
    if (fixed === undefined || formatTarget(fixed) !== formatTarget(target))
      return reject(
        403,
        'target_not_allowed',
        `module ${req.moduleName} only probes its configured target, not ${text}`,
      )
  } else if (req.module.allowed_targets !== undefined) {
    const asHost = isMxTarget(target) ? { host: target.mx, port: target.port } : target
    if (!targetAllowed(asHost, req.module.allowed_targets))
      return reject(
        403,
        'target_not_allowed',
        `target ${text} is not in allowed_targets of module ${req.moduleName}`,
      )
  }
  if (req.hostname === undefined) return target
  if (isMxTarget(target))
    return reject(
      400,
      'bad_parameter',
      'hostname cannot be given with an mx: target: each mail exchanger is checked against its own name',
    )
  const serverName = parseServerName(req.hostname)
  if (typeof serverName !== 'string')
    return reject(400, 'bad_parameter', `invalid hostname: ${serverName.problem}`)
  return { ...target, serverName }
}

/** The target as the request (or the module's fixed target) wrote it, for logs and the history. */
const requestedTarget = (req: Pick<ProbeRequest, 'target' | 'module'>) =>
  req.target ?? req.module.target ?? ''

/** One host:port target by the module's prober; an mx: target by each of its mail exchangers. */
function probe(
  target: ProbeTarget,
  module: Module,
  states: ProberStates,
  ctx: Parameters<typeof runProber>[2],
): Promise<void> {
  const probeHost = (host: Target, hostCtx: typeof ctx) => runProber(host, module, hostCtx, states)
  return isMxTarget(target)
    ? probeMailExchangers(target, mxPlanOf(module), ctx, probeHost)
    : probeHost(target, ctx)
}

function newRegistry(openMetrics: boolean): Registry<PrometheusContentType | OpenMetricsContentType> {
  const registry = new Registry<PrometheusContentType | OpenMetricsContentType>()
  // prom-client's typings lack the constructor argument its JS accepts, hence setContentType.
  if (openMetrics) registry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE)
  return registry
}

/** The messages of an error's causes, below the error itself. */
function causeMessages(err: unknown): string[] {
  const messages: string[] = []
  let e: unknown = err instanceof Error ? err.cause : undefined
  for (let depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) messages.push(e.message)
  return messages
}

export async function handleProbe(req: ProbeRequest, deps: HandlerDeps): Promise<ProbeResponse> {
  const target = chooseTarget(req)
  if ('status' in target) return target
  const timeout = probeTimeout(req.module.timeout, req.scrapeTimeout, deps.timeoutOffset)
  if (typeof timeout === 'string') return reject(400, 'bad_scrape_timeout', timeout)

  // One probe per module and target in each min_interval: a caller cannot make a mail cannon of us,
  // nor trip the server's penalties for logins. The start is recorded before waiting for a slot.
  const where = formatTarget(target)
  const gateKey = `${req.moduleName}|${where}`
  const startedAt = Date.now()
  const backedOff = deps.backoff?.current(gateKey, startedAt)
  if (backedOff !== undefined) return replay(req, deps, backedOff, where)
  const wait = deps.gate?.admit(gateKey, req.module.min_interval, startedAt)
  if (wait !== undefined)
    return reject(
      429,
      'rate_limited',
      `module ${req.moduleName} probes ${where} at most once every ${req.module.min_interval}s (min_interval); try again in ${wait.toFixed(1)}s`,
      Math.ceil(wait),
    )

  const registry = newRegistry(req.openMetrics)
  // Metrics are only registered in it; the content type matters for rendering alone.
  const metricsRegistry = registry as Registry
  // Registered first, so that they lead the answer, as in blackbox_exporter's.
  const successGauge = gaugeOf(metricsRegistry, PROBE_SUCCESS)
  const durationGauge = gaugeOf(metricsRegistry, PROBE_DURATION)
  gaugeOf(metricsRegistry, PROBE_TIMEOUT).set(timeout)
  const { logger, transcript } = createProbeLogger(deps.logger, {
    module: req.moduleName,
    target: requestedTarget(req),
  })
  const phases = new ProbePhases(metricsRegistry)
  const timeoutMs = Math.max(1, Math.round(timeout * 1000))
  const deadlineAt = Date.now() + timeoutMs
  // Our own controller and timer, both let go when the probe ends. (AbortSignal.timeout would keep
  // every listener, and with it the probe's sockets and registry, alive until the timer fires: at
  // scrape rates that exhausted the heap.)
  const controller = new AbortController()
  const signal = controller.signal
  const abort = () => controller.abort()
  const timer = setTimeout(abort, timeoutMs)
  req.clientSignal?.addEventListener('abort', abort, { once: true })

  // Excess probes wait for a slot inside their own deadline, then give up with 503.
  const release = deps.slots ? await deps.slots.acquire(signal) : () => undefined
  if (release === false) {
    clearTimeout(timer)
    req.clientSignal?.removeEventListener('abort', abort)
    deps.gate?.forget(gateKey, startedAt)
    return reject(
      503,
      'overloaded',
      `too many probes in flight (--probe.max-concurrent=${deps.slots?.max ?? 0}); none was free within the ${timeout}s deadline`,
    )
  }
  deps.metrics.probesInFlight.inc()

  logger.debug('beginning probe', { prober: req.module.prober, timeout_seconds: timeout })
  const start = performance.now()
  let failure: unknown
  // The prober rejects promptly on abort; this race is the guarantee that we answer even if it does not.
  let giveUp: (() => void) | undefined
  try {
    await Promise.race([
      probe(target, req.module, deps.states, {
        signal,
        registry: metricsRegistry,
        logger,
        phases,
        deadline: deadlineAt,
        moduleName: req.moduleName,
      }),
      new Promise<never>((_, reject) => {
        giveUp = () => setTimeout(() => reject(new DeadlineError()), 5)
        signal.addEventListener('abort', giveUp, { once: true })
      }),
    ])
  } catch (err) {
    failure = err
  } finally {
    release()
    deps.metrics.probesInFlight.dec()
    clearTimeout(timer)
    req.clientSignal?.removeEventListener('abort', abort)
    if (giveUp) signal.removeEventListener('abort', giveUp) // the race is decided
    // Whatever a prober left open is bound to this signal: the probe is over, so close it now.
    controller.abort()
  }
  const seconds = (performance.now() - start) / 1000
  const success = failure === undefined
  successGauge.set(success ? 1 : 0)
  durationGauge.set(seconds)
  let failedPhase: string | undefined
  let error: string | undefined
  if (!success) {
    const described = describeFailure(failure, phases.current)
    failedPhase = described.phase
    error = described.message
    setGauge(metricsRegistry, PROBE_FAILED_PHASE, 1, {}, { phase: described.phase })
    logger.warn('probe failed', {
      phase: described.phase,
      duration_seconds: seconds.toFixed(3),
      err: described.message,
    })
    // The reason is said for a person; what lies under it (OpenSSL's text, say) is for ?debug=true.
    const causes = causeMessages(described.reason)
    if (causes.length > 0) logger.debug('failure detail', { causes: causes.join(' <- ') })
  } else {
    logger.debug('probe succeeded', { duration_seconds: seconds.toFixed(3) })
  }
  const transcriptLines = transcript.lines()
  if (logsIn(req.module)) {
    setGauge(metricsRegistry, PROBE_AUTH_BACKOFF, 0)
    // A refused login is not tried again for auth_backoff: the probes meanwhile repeat this one.
    if (failure !== undefined && credentialsRefused(failure)) {
      // The transcript's last lines only: each entry is kept for auth_backoff, and there may be many.
      const kept = transcriptLines.slice(-50)
      const attempt = { registry: metricsRegistry, transcript: kept, failedPhase, error, seconds }
      deps.backoff?.refused(gateKey, req.module.auth_backoff, attempt)
    } else {
      deps.backoff?.cleared(gateKey)
    }
  }
  return answer(req, deps, registry, {
    success,
    failedPhase,
    error,
    seconds,
    where,
    transcript: transcriptLines,
    steps: phases.steps(),
  })
}

/** What one probe found, as answer() renders it (a probe, or the replay of a backed-off one). */
interface Finding {
  success: boolean
  failedPhase: string | undefined
  error: string | undefined
  seconds: number
  where: string
  transcript: readonly string[]
  steps: ReturnType<ProbePhases['steps']>
}

/** The failed attempt a backed-off module repeats (AuthBackoff). */
export interface RefusedAttempt {
  registry: Registry
  transcript: readonly string[]
  failedPhase: string | undefined
  error: string | undefined
  seconds: number
}

/** The last attempt's answer again, without connecting: its metrics, and probe_auth_backoff 1. */
async function replay(
  req: ProbeRequest,
  deps: HandlerDeps,
  backedOff: BackedOff<RefusedAttempt>,
  where: string,
): Promise<ProbeResponse> {
  const registry = newRegistry(req.openMetrics)
  const attempt = backedOff.attempt
  await foldRegistries(registry as Registry, [{ registry: attempt.registry, labels: {} }])
  setGauge(registry as Registry, PROBE_AUTH_BACKOFF, 1)
  const until = new Date(backedOff.until).toISOString()
  const { logger, transcript } = createProbeLogger(deps.logger, {
    module: req.moduleName,
    target: requestedTarget(req),
  })
  logger.warn('not logging in again: the last login was refused (auth_backoff)', {
    until,
    phase: attempt.failedPhase,
    err: attempt.error,
  })
  return answer(req, deps, registry, {
    success: false,
    failedPhase: attempt.failedPhase,
    error: `not retried until ${until} (auth_backoff) after: ${attempt.error ?? 'a refused login'}`,
    seconds: attempt.seconds,
    where,
    transcript: [...transcript.lines(), '', 'The last attempt:', ...attempt.transcript],
    steps: [],
  })
}

/** Counts the probe, keeps it in the history, and answers with its metrics (or ?debug=true's text). */
async function answer(
  req: ProbeRequest,
  deps: HandlerDeps,
  registry: Registry<PrometheusContentType | OpenMetricsContentType>,
  finding: Finding,
): Promise<ProbeResponse> {
  const { success, failedPhase, error, seconds, where } = finding
  deps.metrics.probes.inc({ module: req.moduleName, result: success ? 'success' : 'failure' })
  deps.metrics.probeDuration.observe({ module: req.moduleName }, seconds)

  const metricsText = await registry.metrics()
  const transcriptLines = finding.transcript
  // Kept as its pieces (the module is the loaded config's), put together only when asked for.
  const debugText = () =>
    [
      'Logs for the probe:',
      ...transcriptLines,
      '',
      'Metrics that would have been returned:',
      metricsText,
      'Module configuration:',
      stringify({ [req.moduleName]: redactModule(req.module) }),
    ].join('\n')
  deps.history.add({
    time: new Date(),
    module: req.moduleName,
    target: requestedTarget(req),
    success,
    durationSeconds: seconds,
    failedPhase,
    debugText,
    debugBytes: transcriptLines.reduce((bytes, line) => bytes + line.length + 1, metricsText.length),
    phases: finding.steps,
  })
  const outcome: ProbeOutcome = {
    success,
    failedPhase,
    error,
    seconds,
    target: where,
    transcript: transcriptLines,
    metrics: () => registry.getMetricsAsJSON(),
  }
  if (req.debug) return { status: 200, contentType: TEXT, body: debugText(), outcome }
  return { status: 200, contentType: registry.contentType, body: metricsText, outcome }
}
