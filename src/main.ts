#!/usr/bin/env node
// mailprobe_exporter: flags, config load and reload (SIGHUP, POST /-/reload), HTTP server.
import { parseArgs } from 'node:util'
import { ConfigError, loadConfig, type Config } from './config.ts'
import { createExporterMetrics } from './exporter-metrics.ts'
import { History } from './history.ts'
import { AuthBackoff, IntervalGate, ProbeSlots } from './limits.ts'
import { createLogger, LEVELS, type Level } from './logger.ts'
import { ProberStates } from './probers/index.ts'
import type { RefusedAttempt } from './handler.ts'
import { createApp } from './server.ts'
import { PROBE_USAGE, runOneShot } from './oneshot.ts'
import { VERSION } from './version.ts'
import { createWebServer, loadWebConfig, type WebConfig } from './web-config.ts'

export const DEFAULT_LISTEN = ':9786'
export const DEFAULT_MAX_CONCURRENT = 100

const USAGE = `usage: mailprobe_exporter [flags]
       mailprobe_exporter probe --module=NAME [--target=TARGET] [--json]   (one probe, printed; probe --help)
  --config.file=PATH          config file (default config/mailprobe.yml)
  --config.check              validate the config, print problems, exit 0 (valid) or 1
  --web.listen-address=ADDR   [host]:port to listen on (default ${DEFAULT_LISTEN})
  --web.config.file=PATH      TLS and basic auth, exporter-toolkit's web-config.yml format
  --timeout-offset=SECONDS    subtracted from Prometheus' scrape timeout (default 0.5)
  --probe.max-concurrent=N    probes run at once; more wait inside their deadline, then get 503
                              (default ${DEFAULT_MAX_CONCURRENT})
  --log.level=LEVEL           debug, info, warn or error (default info)
  --log.format=FORMAT         logfmt or json (default logfmt)
  --version                   print the version and exit
`

function fail(message: string): never {
  process.stderr.write(`mailprobe_exporter: ${message}\n\n${USAGE}`)
  process.exit(2)
}

function parseListen(address: string): { host: string | undefined; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(address)
  if (!m) fail(`--web.listen-address must be [host]:port, got "${address}"`)
  const host = m[1] ?? m[2]
  return { host: host === '' ? undefined : host, port: Number(m[3]) }
}

function main(): void {
  if (process.argv[2] === 'probe') {
    const args = process.argv.slice(3)
    if (args.includes('--help') || args.includes('-h')) {
      process.stdout.write(PROBE_USAGE)
      return
    }
    void runOneShot(args, { stdout: process.stdout, stderr: process.stderr, env: process.env }).then(
      (code) => (process.exitCode = code),
      (err: unknown) => {
        process.stderr.write(`mailprobe_exporter probe: ${String(err)}\n`)
        process.exitCode = 2
      },
    )
    return
  }
  let values
  try {
    values = parseArgs({
      options: {
        'config.file': { type: 'string', default: 'config/mailprobe.yml' },
        'config.check': { type: 'boolean', default: false },
        'web.listen-address': { type: 'string', default: DEFAULT_LISTEN },
        'web.config.file': { type: 'string' },
        'timeout-offset': { type: 'string', default: '0.5' },
        'probe.max-concurrent': { type: 'string', default: String(DEFAULT_MAX_CONCURRENT) },
        'log.level': { type: 'string', default: 'info' },
        'log.format': { type: 'string', default: 'logfmt' },
        version: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }).values
  } catch (err) {
    fail((err as Error).message)
  }
  if (values.help) {
    process.stdout.write(USAGE)
    return
  }
  if (values.version) {
    process.stdout.write(`mailprobe_exporter ${VERSION} (node ${process.version})\n`)
    return
  }
  const level = values['log.level']
  if (!(LEVELS as readonly string[]).includes(level)) fail(`--log.level must be one of ${LEVELS.join(', ')}`)
  const format = values['log.format']
  if (format !== 'logfmt' && format !== 'json') fail('--log.format must be logfmt or json')
  const timeoutOffset = Number(values['timeout-offset'])
  if (!Number.isFinite(timeoutOffset) || timeoutOffset < 0)
    fail('--timeout-offset must be a number of seconds >= 0')
  const maxConcurrent = Number(values['probe.max-concurrent'])
  if (!Number.isInteger(maxConcurrent) || maxConcurrent < 1)
    fail('--probe.max-concurrent must be a whole number >= 1')
  const configFile = values['config.file']
  const logger = createLogger({ level: level as Level, format })

  let config: Config
  try {
    config = loadConfig(configFile)
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`)
    process.exit(1)
  }
  const webConfigFile = values['web.config.file']
  let webConfig: WebConfig | undefined
  try {
    webConfig = webConfigFile === undefined ? undefined : loadWebConfig(webConfigFile)
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`)
    process.exit(1)
  }
  if (values['config.check']) {
    process.stdout.write(`${configFile}: ok, ${Object.keys(config.modules).length} modules\n`)
    return
  }

  const metrics = createExporterMetrics(VERSION)
  metrics.reloadSuccess.set(1)
  metrics.reloadTimestamp.set(Date.now() / 1000)

  let draining = false
  // Deferred state files: validated, and locked against a second exporter (which fails here, at start).
  const states = new ProberStates({ logger, registry: metrics.registry })
  try {
    states.configure(config)
  } catch (err) {
    logger.error('cannot start', { err: (err as Error).message })
    process.exit(1)
  }
  const backoff = new AuthBackoff<RefusedAttempt>()
  const app = createApp({
    version: VERSION,
    config: () => config,
    reload: () => reload(),
    logger,
    history: new History(),
    metrics,
    timeoutOffset,
    states,
    slots: new ProbeSlots(maxConcurrent),
    gate: new IntervalGate(),
    backoff,
    draining: () => draining,
  })
  const { host, port } = parseListen(values['web.listen-address'])
  const web = createWebServer(app, webConfig, logger)
  const server = web.server
  const reload = (): Promise<string | undefined> => {
    try {
      const next = loadConfig(configFile)
      const nextWeb = webConfigFile === undefined ? undefined : loadWebConfig(webConfigFile)
      const webProblem = nextWeb === undefined ? undefined : web.check(nextWeb)
      if (webProblem !== undefined) throw new Error(`${webConfigFile}: ${webProblem}`)
      // A state file newly in the config must be ours alone, or the reload fails and the old config stays.
      states.configure(next)
      if (nextWeb !== undefined) web.update(nextWeb)
      config = next
      backoff.clear() // a reload may have fixed the password
      metrics.reloadSuccess.set(1)
      metrics.reloadTimestamp.set(Date.now() / 1000)
      logger.info('loaded config file', {
        file: configFile,
        ...(webConfigFile === undefined ? {} : { web_config: webConfigFile }),
      })
      return Promise.resolve(undefined)
    } catch (err) {
      metrics.reloadSuccess.set(0)
      const message = err instanceof ConfigError ? err.problems.join('; ') : (err as Error).message
      logger.error('error reloading config, keeping the previous one', { err: message })
      return Promise.resolve(message)
    }
  }
  process.on('SIGHUP', () => void reload())
  server.listen({ port, ...(host === undefined ? {} : { host }) }, () => {
    logger.info('listening', {
      address: values['web.listen-address'],
      version: VERSION,
      config: configFile,
      tls: web.scheme === 'https',
      basic_auth: (webConfig?.users.size ?? 0) > 0,
    })
  })
  server.on('error', (err) => {
    logger.error('cannot listen', { err })
    process.exit(1)
  })
  // Requests being answered, so that shutdown waits for the last byte of each, not only for its probe.
  let active = 0
  server.on('request', (_req, res) => {
    active++
    res.once('close', () => active--)
  })
  /**
   * SIGTERM/SIGINT: stop accepting, let the probes in flight answer within their deadlines (new
   * requests on open connections get 503), then exit 0. A second signal exits at once.
   */
  const stop = (signal: string) => {
    if (draining) {
      logger.warn('second signal: exiting without waiting', { signal })
      process.exit(1)
    }
    draining = true
    logger.info('shutting down: waiting for the probes in flight', { signal, requests: active })
    server.close()
    server.closeIdleConnections()
    const longest = Math.max(0, ...Object.values(config.modules).map((m) => m.timeout))
    const giveUpAt = Date.now() + (longest + 1) * 1000
    const poll = setInterval(() => {
      if (active > 0 && Date.now() < giveUpAt) return
      clearInterval(poll)
      server.closeAllConnections()
      if (active > 0) logger.warn('probes still running at shutdown', { requests: active })
      // After the probes: their last state updates are written, then the locks released.
      states.close().then(
        () => {
          logger.info('stopped')
          process.exit(0)
        },
        (err: unknown) => {
          logger.error('cannot release the round-trip state files', { err })
          process.exit(1)
        },
      )
    }, 10)
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
}

main()
