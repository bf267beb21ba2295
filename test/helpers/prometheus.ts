// End-to-end plumbing: the real exporter and a real Prometheus (Debian's /usr/bin/prometheus) as child
// processes on loopback ports, a small client for Prometheus' HTTP API, and a bounded wait.
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { ROOT } from './dashboards.ts'

/** A loopback port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => {
        if (address !== null && typeof address === 'object') resolve(address.port)
        else reject(new Error('no port'))
      })
    })
  })
}

/** Polls `check` until it returns something other than undefined; fails after `timeoutMs`, naming `what`. */
export async function waitFor<T>(
  what: string,
  timeoutMs: number,
  check: () => Promise<T | undefined>,
  intervalMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const value = await check()
      if (value !== undefined) return value
      last = undefined
    } catch (err) {
      last = err
    }
    if (Date.now() >= deadline) {
      const why = last instanceof Error ? `: ${last.message}` : ''
      throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}${why}`)
    }
    await new Promise((r) => setTimeout(r, intervalMs))
  }
}

export interface Daemon {
  /** http://127.0.0.1:PORT (https:// with ExporterOptions.scheme) */
  url: string
  /** The last output lines (stdout and stderr), for failure messages. */
  output(): string
  /** The last 200 complete output lines, as they came. */
  lines(): string[]
  /** Sends a signal (SIGHUP reloads the exporter's config). */
  kill(signal: NodeJS.Signals): void
  /** SIGTERM, then SIGKILL after 5 s; resolves when the process has exited. */
  stop(): Promise<void>
  /** Resolves with the exit code (null when a signal ended it) once the process has exited. */
  exitCode(): Promise<number | null>
}

function supervise(name: string, child: ChildProcess, url: string): Daemon & { exited: Promise<void> } {
  const lines: string[] = []
  // Per stream: a line may arrive in two chunks, so the unfinished tail waits for the rest.
  const collect = () => {
    let tail = ''
    return (chunk: Buffer) => {
      const parts = (tail + chunk.toString('utf8')).split('\n')
      tail = parts.pop() ?? ''
      lines.push(...parts.filter(Boolean))
      if (lines.length > 200) lines.splice(0, lines.length - 200)
    }
  }
  child.stdout?.on('data', collect())
  child.stderr?.on('data', collect())
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve()
    else child.once('exit', () => resolve())
  })
  return {
    url,
    exited,
    output: () => `--- ${name} output (last lines) ---\n${lines.slice(-40).join('\n')}`,
    lines: () => [...lines],
    kill: (signal) => child.kill(signal),
    exitCode: () => exited.then(() => child.exitCode),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    },
  }
}

/** Waits until GET url answers 200, or fails early when the process exits. */
async function waitReady(
  daemon: Daemon & { exited: Promise<void> },
  path: string,
  timeoutMs: number,
  ready?: (url: string) => Promise<boolean>,
) {
  let gone = false
  void daemon.exited.then(() => (gone = true))
  await waitFor(`${daemon.url}${path}`, timeoutMs, async () => {
    if (gone) throw new Error(`the process exited\n${daemon.output()}`)
    if (ready) return (await ready(daemon.url).catch(() => false)) ? true : undefined
    const res = await fetch(`${daemon.url}${path}`, { signal: AbortSignal.timeout(1000) }).catch(
      () => undefined,
    )
    return res?.ok === true ? true : undefined
  })
}

export interface ExporterOptions {
  /** https when the exporter runs with a web config that has tls_server_config. */
  scheme?: 'http' | 'https'
  /** Replaces the readiness check (GET /-/healthy answers 200), e.g. for TLS or basic auth. */
  ready?: (url: string) => Promise<boolean>
}

/** The exporter from source (node --import tsx src/main.ts), on a free loopback port. */
export async function startExporter(
  configFile: string,
  extraFlags: string[] = [],
  options: ExporterOptions = {},
): Promise<Daemon> {
  const port = await freePort()
  // node itself, not npx: SIGTERM must reach the exporter, not a wrapper.
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'src/main.ts',
      `--config.file=${configFile}`,
      `--web.listen-address=127.0.0.1:${port}`,
      ...extraFlags,
    ],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const daemon = supervise('exporter', child, `${options.scheme ?? 'http'}://127.0.0.1:${port}`)
  try {
    await waitReady(daemon, '/-/healthy', 20_000, options.ready)
  } catch (err) {
    await daemon.stop()
    throw err
  }
  return daemon
}

/** Prometheus on `port` with its data in `dataDir`. */
export async function startPrometheus(configFile: string, dataDir: string, port: number): Promise<Daemon> {
  const child = spawn(
    '/usr/bin/prometheus',
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${dataDir}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const daemon = supervise('prometheus', child, `http://127.0.0.1:${port}`)
  try {
    await waitReady(daemon, '/-/ready', 20_000)
  } catch (err) {
    await daemon.stop()
    throw err
  }
  return daemon
}

// ---------------------------------------------------------------- the HTTP API (v1)

export interface Series {
  metric: Record<string, string>
  value?: [number, string]
  values?: [number, string][]
}

export type QueryResult =
  | { ok: true; resultType: 'vector' | 'matrix'; result: Series[] }
  | { ok: true; resultType: 'scalar' | 'string'; result: [number, string] }
  | { ok: false; error: string }

export interface ActiveTarget {
  labels: Record<string, string>
  scrapePool: string
  scrapeUrl: string
  health: 'up' | 'down' | 'unknown'
  lastError: string
  lastScrape: string
}

export interface Alert {
  labels: Record<string, string>
  annotations: Record<string, string>
  state: 'pending' | 'firing'
  value: string
}

interface Envelope<T> {
  status: 'success' | 'error'
  data?: T
  errorType?: string
  error?: string
}

export class PrometheusApi {
  readonly url: string

  constructor(url: string) {
    this.url = url
  }

  private async call<T>(path: string, form?: Record<string, string>): Promise<Envelope<T>> {
    const res = await fetch(`${this.url}/api/v1/${path}`, {
      method: form === undefined ? 'GET' : 'POST',
      ...(form === undefined ? {} : { body: new URLSearchParams(form) }),
      signal: AbortSignal.timeout(10_000),
    })
    // Bad expressions come back as 400/422 with the same JSON envelope.
    return (await res.json()) as Envelope<T>
  }

  private async data<T>(path: string, form?: Record<string, string>): Promise<T> {
    const body = await this.call<T>(path, form)
    if (body.status !== 'success' || body.data === undefined)
      throw new Error(`${path}: ${body.errorType ?? ''} ${body.error ?? 'no data'}`)
    return body.data
  }

  /** An instant query at the current time. */
  async query(expr: string): Promise<QueryResult> {
    const body = await this.call<{ resultType: string; result: unknown }>('query', { query: expr })
    if (body.status !== 'success' || body.data === undefined)
      return { ok: false, error: `${body.errorType ?? 'error'}: ${body.error ?? '?'}` }
    return { ok: true, ...body.data } as QueryResult
  }

  /** The series of an instant query; throws if the expression fails or is not a vector. */
  async vector(expr: string): Promise<Series[]> {
    const r = await this.query(expr)
    if (!r.ok) throw new Error(`${expr}: ${r.error}`)
    if (r.resultType !== 'vector') throw new Error(`${expr}: ${r.resultType}, not a vector`)
    return r.result
  }

  /** What Grafana's label_values(selector, label) asks for. */
  labelValues(label: string, selector: string): Promise<string[]> {
    return this.data<string[]>(
      `label/${encodeURIComponent(label)}/values?${new URLSearchParams({ 'match[]': selector }).toString()}`,
    )
  }

  async targets(): Promise<ActiveTarget[]> {
    return (await this.data<{ activeTargets: ActiveTarget[] }>('targets?state=active')).activeTargets
  }

  async alerts(): Promise<Alert[]> {
    return (await this.data<{ alerts: Alert[] }>('alerts')).alerts
  }
}

/** Whether a query answered with at least one sample (a scalar always has one). */
export function hasData(r: QueryResult): boolean {
  if (!r.ok) return false
  return r.resultType === 'vector' || r.resultType === 'matrix' ? r.result.length > 0 : true
}
