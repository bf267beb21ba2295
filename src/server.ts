// HTTP routes: /probe, /sd, /metrics, / (landing page), /logs, /probe-details, /config, /-/healthy, /-/ready, /-/reload.
import express, { type NextFunction, type Request, type Response } from 'express'
import { stringify } from 'yaml'
import { redactModule, type Config } from './config.ts'
import { handleProbe, type HandlerDeps } from './handler.ts'
import { reject, type Rejection } from './rejections.ts'
import { landingPage, probeDetailsPage } from './landing.ts'
import { discoverMailExchangers } from './sd.ts'

export interface ServerState extends HandlerDeps {
  version: string
  config(): Config
  /** Reloads the config file; resolves to an error message, or undefined on success. */
  reload(): Promise<string | undefined>
  /** True once SIGTERM came: probes in flight finish, new ones are refused. */
  draining?(): boolean
}

const TEXT = 'text/plain; charset=utf-8'

/** A single string query parameter, or a message saying what is wrong with it. */
function queryParam(req: Request, name: string): string | undefined | { error: string } {
  const value: unknown = req.query[name]
  if (value === undefined) return undefined
  if (typeof value !== 'string') return { error: `${name} parameter must be given once, as a plain string` }
  return value
}

function wantsOpenMetrics(req: Request): boolean {
  return /application\/openmetrics-text/i.test(req.get('accept') ?? '')
}

export function createApp(state: ServerState): express.Express {
  const app = express()
  app.disable('x-powered-by')
  // No ETag: every answer is new (a probe, a scrape), and hashing each body costs CPU for nothing.
  app.set('etag', false)

  /** Answers a refused /probe request, counted by reason. */
  const refuse = (res: Response, rejection: Rejection) => {
    state.metrics.rejected.inc({ reason: rejection.reason })
    if (rejection.retryAfter !== undefined) res.set('Retry-After', String(rejection.retryAfter))
    if (rejection.status === 405) res.set('Allow', 'GET')
    res.status(rejection.status).set('Content-Type', rejection.contentType).send(rejection.body)
  }

  // Express answers HEAD with the GET handler: that would run a whole probe (a round trip sends mail).
  app.head('/probe', (_req: Request, res: Response) => {
    refuse(res, reject(405, 'method_not_allowed', 'use GET for /probe'))
  })

  app.get('/probe', async (req: Request, res: Response) => {
    if (state.draining?.()) {
      res.set('Connection', 'close')
      refuse(res, reject(503, 'shutting_down', 'the exporter is shutting down'))
      return
    }
    const moduleName = queryParam(req, 'module')
    const target = queryParam(req, 'target')
    const debug = queryParam(req, 'debug')
    const hostname = queryParam(req, 'hostname')
    for (const p of [moduleName, target, debug, hostname]) {
      if (typeof p === 'object') {
        refuse(res, reject(400, 'bad_parameter', p.error))
        return
      }
    }
    if (moduleName === undefined || moduleName === '') {
      refuse(res, reject(400, 'missing_module', 'module parameter is missing'))
      return
    }
    const modules = state.config().modules
    // Own keys only: "constructor" or "__proto__" must not find Object's members.
    const module = Object.hasOwn(modules, moduleName as string) ? modules[moduleName as string] : undefined
    if (!module) {
      state.metrics.moduleUnknown.inc()
      const known = Object.keys(state.config().modules).join(', ')
      refuse(
        res,
        reject(400, 'unknown_module', `unknown module ${JSON.stringify(moduleName)} (known: ${known})`),
      )
      return
    }
    const client = new AbortController()
    res.on('close', () => {
      if (!res.writableFinished) client.abort()
    })
    const answer = await handleProbe(
      {
        moduleName: moduleName as string,
        module,
        target: target as string | undefined,
        hostname: hostname as string | undefined,
        scrapeTimeout: req.get('x-prometheus-scrape-timeout-seconds'),
        debug: debug === 'true',
        openMetrics: wantsOpenMetrics(req),
        clientSignal: client.signal,
      },
      state,
    )
    if (answer.status !== 200) {
      refuse(res, answer)
      return
    }
    if (state.draining?.()) res.set('Connection', 'close')
    res.status(answer.status).set('Content-Type', answer.contentType).send(answer.body)
  })

  // Text format only: prom-client renames counters in place when it renders OpenMetrics, which would
  // corrupt this long-lived registry for later scrapes. /probe registries are per request and negotiate.
  app.get('/metrics', async (_req: Request, res: Response) => {
    const registry = state.metrics.registry
    res.set('Content-Type', registry.contentType).send(await registry.metrics())
  })

  app.get('/', (_req: Request, res: Response) => {
    res
      .type('text/html; charset=utf-8')
      .send(landingPage(state.version, state.config(), state.history.list()))
  })

  app.get('/logs', (req: Request, res: Response) => {
    const id = queryParam(req, 'id')
    const record = typeof id === 'string' ? state.history.get(Number(id)) : undefined
    if (!record) {
      res.status(404).type(TEXT).send('no probe with that id in the history\n')
      return
    }
    res.type(TEXT).send(record.debugText())
  })

  // Service discovery: a domain's mail exchangers as http_sd target groups (src/sd.ts).
  app.get('/sd', async (req: Request, res: Response) => {
    const moduleName = queryParam(req, 'module')
    const target = queryParam(req, 'target')
    const bad = [moduleName, target].find((p) => typeof p === 'object')
    const modules = state.config().modules
    const name = typeof moduleName === 'string' ? moduleName : ''
    const module = Object.hasOwn(modules, name) ? modules[name] : undefined
    const answer =
      bad !== undefined
        ? reject(400, 'bad_parameter', bad.error)
        : module === undefined
          ? reject(
              400,
              'unknown_module',
              `unknown module ${JSON.stringify(name)} (known: ${Object.keys(modules).join(', ')})`,
            )
          : await discoverMailExchangers(name, module, target as string | undefined, state.logger)
    res.status(answer.status).set('Content-Type', answer.contentType).send(answer.body)
  })

  app.get('/probe-details', (req: Request, res: Response) => {
    const id = queryParam(req, 'id')
    const record = typeof id === 'string' ? state.history.get(Number(id)) : undefined
    if (!record) {
      res.status(404).type(TEXT).send('no probe with that id in the history\n')
      return
    }
    res.type('text/html; charset=utf-8').send(probeDetailsPage(record))
  })

  app.get('/config', (_req: Request, res: Response) => {
    const modules = Object.fromEntries(
      Object.entries(state.config().modules).map(([name, m]) => [name, redactModule(m)]),
    )
    res.type(TEXT).send(stringify({ modules }))
  })

  app.get('/-/healthy', (_req: Request, res: Response) => {
    res.type(TEXT).send('Healthy\n')
  })
  app.get('/-/ready', (_req: Request, res: Response) => {
    res.type(TEXT).send('Ready\n')
  })
  app.post('/-/reload', async (_req: Request, res: Response) => {
    const error = await state.reload()
    if (error === undefined) res.type(TEXT).send('config reloaded\n')
    else res.status(500).type(TEXT).send(`failed to reload config: ${error}\n`)
  })

  app.use((_req: Request, res: Response) => {
    res.status(404).type(TEXT).send('not found\n')
  })
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    state.logger.error('request failed', { err })
    if (!res.headersSent) res.status(500).type(TEXT).send('internal error\n')
  })
  return app
}
