// The high-concurrency run: N probes through one exporter's /probe from `concurrency` loops, each over its own
// keep-alive HTTP connection, with the exporter's CPU time and resident memory read from /proc meanwhile.
import { Agent, get } from 'node:http'
import { cpuSeconds, quantile, resident } from './stats.ts'

export interface ConcurrentResult {
  concurrency: number
  probes: number
  /** Answers other than 200 with probe_success 1, and requests that got no answer. */
  failed: number
  firstFailure?: string
  perSecond: number
  median: number
  p90: number
  p99: number
  cpuMsPerProbe: number
  /**
   * The exporter's VmRSS just before the run and its maximum during it (sampled every 50 ms), and the
   * maximum of its anonymous part (RssAnon: VmRSS without the pages of mapped files such as the program).
   */
  rssMiB: { before: number; peak: number; peakAnon: number }
  /** TCP connections the client opened: `concurrency` when keep-alive held throughout. */
  connections: number
}

interface Answer {
  status: number
  body: string
  reused: boolean
}

function request(agent: Agent, url: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = get(url, { agent }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('error', reject)
      res.on('end', () => {
        resolve({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks).toString('utf8'),
          reused: req.reusedSocket,
        })
      })
    })
    req.on('error', reject)
  })
}

// A regexp, not a parse of the whole answer: the load generator shares the machine's cores with the exporters.
const SUCCESS = /^probe_success 1$/m

export async function runConcurrent(options: {
  base: string
  pid: number
  module: string
  target: string
  probes: number
  concurrency: number
}): Promise<ConcurrentResult> {
  const { pid, probes, concurrency } = options
  const url = `${options.base}/probe?module=${encodeURIComponent(options.module)}&target=${encodeURIComponent(options.target)}`
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency })
  const walls: number[] = []
  let failed = 0
  let connections = 0
  let firstFailure: string | undefined
  const first = resident(pid)
  const before = first.rss
  let peak = first.rss
  let peakAnon = first.anon
  const sample = () => {
    const now = resident(pid)
    peak = Math.max(peak, now.rss)
    peakAnon = Math.max(peakAnon, now.anon)
  }
  const sampler = setInterval(sample, 50)
  const cpuBefore = cpuSeconds(pid)
  const start = performance.now()
  let next = 0
  try {
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next++ < probes) {
          const sent = performance.now()
          try {
            const answer = await request(agent, url)
            walls.push(performance.now() - sent)
            if (!answer.reused) connections++
            if (answer.status !== 200 || !SUCCESS.test(answer.body)) {
              failed++
              firstFailure ??= `HTTP ${answer.status}: ${answer.body.slice(0, 1000)}`
            }
          } catch (err) {
            walls.push(performance.now() - sent)
            failed++
            firstFailure ??= `no answer: ${String(err)}`
          }
        }
      }),
    )
  } finally {
    clearInterval(sampler)
    agent.destroy()
  }
  const seconds = (performance.now() - start) / 1000
  sample()
  return {
    concurrency,
    probes,
    failed,
    ...(firstFailure === undefined ? {} : { firstFailure }),
    perSecond: probes / seconds,
    median: quantile(walls, 0.5),
    p90: quantile(walls, 0.9),
    p99: quantile(walls, 0.99),
    cpuMsPerProbe: ((cpuSeconds(pid) - cpuBefore) * 1000) / probes,
    rssMiB: { before, peak, peakAnon },
    connections,
  }
}
