// Soak: many mixed probes (real stack, failures, floods from hostile servers) through the exporter's HTTP
// /probe, watching the exporter process's RSS and open fds from outside (/proc), and flood answer times.
import type { ChildProcess } from 'node:child_process'
import { readdirSync } from 'node:fs'
import http from 'node:http'
import type { MailStack } from '../test/helpers/stack.ts'
import { cycle, SOAK_DEADLINE_MS, type HostileServers, type ProbeSpec } from './soak-mix.ts'
import { resident, rssMiB, type Resident } from './stats.ts'

/** A flood (or silent) probe must answer within its deadline plus this. */
const SLACK_MS = 100
const SAMPLE_MS = 100
/** After the SIGUSR2 that makes the exporter collect its garbage. */
const GC_WAIT_MS = 1000
/** A request the exporter has not answered by then counts as a transport error (bounded wait). */
const REQUEST_TIMEOUT_MS = 60_000
/** Of each answer, only its start and end are kept (probe_success comes first; a flood may be huge). */
const HEAD_BYTES = 256 * 1024
const TAIL_BYTES = 64 * 1024

interface Answer {
  status: number
  wallMs: number
  bytes: number
  success: number | undefined
  reportedMs: number | undefined
  failedPhase: string | undefined
  error: string | undefined
  /** The first line of a non-200 answer (the exporter says why it refused). */
  refusal: string | undefined
}

/** GET without keep-alive (a fresh connection each time, so no idle HTTP socket is held in the fd count). */
function get(url: string): Promise<Answer> {
  const start = performance.now()
  return new Promise((resolve) => {
    const head: Buffer[] = []
    let headBytes = 0
    let tail = Buffer.alloc(0)
    let bytes = 0
    let status = 0
    const done = (error?: string) => {
      const text = Buffer.concat(head).toString('latin1') + '\n' + tail.toString('latin1')
      const success = /^probe_success (\S+)/m.exec(text)?.[1]
      const duration = /^probe_duration_seconds (\S+)/m.exec(text)?.[1]
      resolve({
        status,
        wallMs: performance.now() - start,
        bytes,
        success: success === undefined ? undefined : Number(success),
        reportedMs: duration === undefined ? undefined : Number(duration) * 1000,
        failedPhase: /^probe_failed_phase_info\{phase="([^"]*)"\} 1/m.exec(text)?.[1],
        error,
        refusal: status === 200 ? undefined : text.split('\n')[0]?.slice(0, 300),
      })
    }
    const req = http.get(url, { agent: false, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      status = res.statusCode ?? 0
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length
        if (headBytes < HEAD_BYTES) {
          head.push(chunk)
          headBytes += chunk.length
        } else {
          tail = Buffer.concat([tail, chunk])
          if (tail.length > TAIL_BYTES) tail = tail.subarray(tail.length - TAIL_BYTES)
        }
      })
      res.on('end', () => done())
      res.on('error', (err) => done(err.message))
    })
    req.on('timeout', () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)))
    req.on('error', (err) => done(err.message))
  })
}

const fdCount = (pid: number) => readdirSync(`/proc/${pid}/fd`).length

export interface NodeMemory {
  heapUsedMiB: number | undefined
  heapTotalMiB: number | undefined
  externalMiB: number | undefined
  /** Committed size of each V8 heap space (new, old, code, large_object, ...). */
  spacesMiB: Record<string, number>
  /** Heap used outside the code spaces: what the program keeps (compiled code grows as V8 optimises). */
  keptMiB: number | undefined
}

/** The exporter's own view of its memory (prom-client's nodejs_* metrics): where RSS growth sits, if any. */
async function nodeMemory(base: string): Promise<NodeMemory> {
  const answer = await fetch(`${base}/metrics`).then((r) => r.text())
  const mib = (name: string) => {
    const value = new RegExp(`^${name} (\\S+)`, 'm').exec(answer)?.[1]
    return value === undefined ? undefined : Number(value) / 1024 / 1024
  }
  const used = (space: string) =>
    Number(
      new RegExp(`^nodejs_heap_space_size_used_bytes\\{space="${space}"\\} (\\S+)`, 'm').exec(answer)?.[1] ??
        0,
    )
  const heapUsed = mib('nodejs_heap_size_used_bytes')
  return {
    heapUsedMiB: heapUsed,
    keptMiB:
      heapUsed === undefined
        ? undefined
        : heapUsed - (used('code') + used('code_large_object')) / 1024 / 1024,
    heapTotalMiB: mib('nodejs_heap_size_total_bytes'),
    externalMiB: mib('nodejs_external_memory_bytes'),
    spacesMiB: Object.fromEntries(
      [...answer.matchAll(/^nodejs_heap_space_size_total_bytes\{space="(\w+)"\} (\S+)/gm)]
        .map(([, space, value]) => [space!, Number(value) / 1024 / 1024] as const)
        .filter(([, value]) => value >= 0.05),
    ),
  }
}

const quantile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * RSS and the heap after a full garbage collection (the baseline's also starts the run from a collected
 * heap, not from wherever the collector happened to be after the warm-up) (the exporter runs with bench.ts's GC_ON_SIGNAL): what
 * the process keeps, without the garbage of the last probes that the collector has not reached yet.
 */
async function collected(
  pid: number,
  base: string,
): Promise<{ rss: number; resident: Resident; memory: NodeMemory }> {
  process.kill(pid, 'SIGUSR2')
  await sleep(GC_WAIT_MS)
  const now = resident(pid)
  return { rss: now.rss, resident: now, memory: await nodeMemory(base) }
}

export interface SoakOptions {
  base: string
  exporter: ChildProcess
  stack: MailStack
  hostile: HostileServers
  probes: number
  warmup: number
  concurrency: number
  settleMs: number
}

export interface CategoryResult {
  category: string
  expectSuccess: boolean
  deadlineMs: number | undefined
  count: number
  non200: number
  transportErrors: number
  unexpectedResult: number
  failedPhases: Record<string, number>
  /** One refusal text per non-200 status seen. */
  refusals: Record<string, string>
  wallP50Ms: number
  wallP99Ms: number
  wallMaxMs: number
  reportedMaxMs: number
  lateOverSlack: number
  maxBodyBytes: number
}

export interface SoakResult {
  probes: number
  completed: number
  warmup: number
  concurrency: number
  deadlineMs: number
  slackMs: number
  settleMs: number
  seconds: number
  probesPerSecond: number
  rssMiB: {
    idle: number
    baseline: number
    maxWarmup: number
    max: number
    end: number
    /** After a full GC (collected()): the figures the check compares. */
    baselineCollected: number
    endCollected: number
    endVsBaseline: number
    /** The RSS after a full GC in its parts: anonymous (heaps) and file-backed (the program's pages). */
    partsCollected: { baseline: Resident; end: Resident | undefined }
  }
  fds: { idle: number; baseline: number; max: number; end: number; endAfterWait: number }
  /** The heap after a full GC, at the baseline and at the end. */
  nodeMemory: { baseline: NodeMemory; end: NodeMemory | undefined }
  /** RSS (MiB) and fds after every tenth of the probes. */
  timeline: { probes: number; seconds: number; rssMiB: number; fds: number }[]
  non200: number
  transportErrors: number
  unexpectedResult: number
  floods: { count: number; p99Ms: number; maxMs: number; late: number }
  categories: CategoryResult[]
  exporterExit: string | undefined
  hostile: unknown
  verdicts: { check: string; pass: boolean; detail: string }[]
}

export async function runSoak(o: SoakOptions): Promise<SoakResult> {
  const pid = o.exporter.pid ?? 0
  let exit: string | undefined
  o.exporter.once('exit', (code, signal) => (exit = `exited (code ${code}, signal ${signal})`))
  const sequence = (i: number) => {
    const specs = cycle(o.stack, o.hostile.ports, Math.floor(i / 20))
    return specs[i % specs.length]!
  }

  let maxRss = 0
  let maxFds = 0
  const sample = () => {
    if (exit !== undefined) return
    try {
      maxRss = Math.max(maxRss, rssMiB(pid))
      maxFds = Math.max(maxFds, fdCount(pid))
    } catch {
      // the process just went away
    }
  }
  const sampler = setInterval(sample, SAMPLE_MS)

  /** Runs `count` probes of the sequence at the soak's concurrency; stops early if the exporter exits. */
  async function run(count: number, onAnswer: (spec: ProbeSpec, a: Answer) => void) {
    let next = 0
    await Promise.all(
      Array.from({ length: o.concurrency }, async () => {
        while (exit === undefined) {
          const i = next++
          if (i >= count) return
          const spec = sequence(i)
          onAnswer(spec, await get(`${o.base}/probe?module=${spec.module}&target=127.0.0.1:${spec.port}`))
        }
      }),
    )
  }

  const idle = { rss: rssMiB(pid), fds: fdCount(pid) }
  try {
    process.stdout.write(`soak: warm-up, ${o.warmup} probes of the same mix\n`)
    await run(o.warmup, () => undefined)
    const maxWarmup = maxRss
    await sleep(o.settleMs)
    const settled = rssMiB(pid)
    const gc = await collected(pid, o.base)
    const baseline = {
      rss: settled,
      collected: gc.rss,
      parts: gc.resident,
      fds: fdCount(pid),
      memory: gc.memory,
    }
    maxRss = Math.max(baseline.rss, baseline.collected)
    maxFds = baseline.fds

    process.stdout.write(
      `soak: ${o.probes} probes at concurrency ${o.concurrency} (baseline RSS ${baseline.rss.toFixed(1)} MiB, ${baseline.collected.toFixed(1)} MiB after a full GC, ${baseline.fds} fds)\n`,
    )
    const byCategory = new Map<string, { spec: ProbeSpec; answers: Answer[] }>()
    let completed = 0
    const timeline: SoakResult['timeline'] = []
    const step = Math.max(1, Math.round(o.probes / 10))
    const start = performance.now()
    await run(o.probes, (spec, a) => {
      let entry = byCategory.get(spec.category)
      if (!entry) byCategory.set(spec.category, (entry = { spec, answers: [] }))
      entry.answers.push(a)
      if (++completed % step === 0 && exit === undefined) {
        const point = {
          probes: completed,
          seconds: (performance.now() - start) / 1000,
          rssMiB: rssMiB(pid),
          fds: fdCount(pid),
        }
        timeline.push(point)
        process.stdout.write(
          `  ${completed} probes, ${point.seconds.toFixed(0)} s, RSS ${point.rssMiB.toFixed(1)} MiB (max ${maxRss.toFixed(1)}), ${point.fds} fds\n`,
        )
      }
    })
    const seconds = (performance.now() - start) / 1000

    await sleep(o.settleMs)
    let end = { rss: NaN, collected: NaN, fds: NaN }
    let endAfterWait = NaN
    let memoryEnd: NodeMemory | undefined
    let partsEnd: Resident | undefined
    if (exit === undefined) {
      const settledEnd = rssMiB(pid)
      const gcEnd = await collected(pid, o.base)
      end = { rss: settledEnd, collected: gcEnd.rss, fds: fdCount(pid) }
      memoryEnd = gcEnd.memory
      partsEnd = gcEnd.resident
      // Sockets closed late (or never): wait a little longer and look again, bounded.
      endAfterWait = end.fds
      for (let i = 0; i < 20 && endAfterWait > baseline.fds; i++) {
        await sleep(500)
        endAfterWait = fdCount(pid)
      }
    }

    const categories: CategoryResult[] = [...byCategory.values()].map(({ spec, answers }) => {
      const walls = answers.map((a) => a.wallMs)
      const failedPhases: Record<string, number> = {}
      for (const a of answers) {
        const key = a.error
          ? 'no answer'
          : a.status !== 200
            ? `HTTP ${a.status}`
            : (a.failedPhase ?? (a.success === 1 ? '(success)' : '(none)'))
        failedPhases[key] = (failedPhases[key] ?? 0) + 1
      }
      const refusals: Record<string, string> = {}
      for (const a of answers) if (a.refusal !== undefined) refusals[String(a.status)] ??= a.refusal
      return {
        category: spec.category,
        expectSuccess: spec.expectSuccess,
        deadlineMs: spec.deadlineMs,
        count: answers.length,
        non200: answers.filter((a) => a.status !== 200).length,
        transportErrors: answers.filter((a) => a.error !== undefined).length,
        unexpectedResult: answers.filter((a) => a.success !== (spec.expectSuccess ? 1 : 0)).length,
        failedPhases,
        refusals,
        wallP50Ms: quantile(walls, 0.5),
        wallP99Ms: quantile(walls, 0.99),
        wallMaxMs: Math.max(...walls),
        reportedMaxMs: Math.max(...answers.map((a) => a.reportedMs ?? NaN).filter((x) => !Number.isNaN(x))),
        lateOverSlack:
          spec.deadlineMs === undefined
            ? 0
            : answers.filter((a) => a.wallMs > spec.deadlineMs! + SLACK_MS).length,
        maxBodyBytes: Math.max(...answers.map((a) => a.bytes)),
      }
    })
    categories.sort((a, b) => a.category.localeCompare(b.category))
    const floodWalls = [...byCategory.values()]
      .filter((e) => e.spec.flood)
      .flatMap((e) => e.answers.map((a) => a.wallMs))
    const floods = {
      count: floodWalls.length,
      p99Ms: quantile(floodWalls, 0.99),
      maxMs: Math.max(...floodWalls),
      late: floodWalls.filter((w) => w > SOAK_DEADLINE_MS + SLACK_MS).length,
    }
    const silentWalls = [...byCategory.values()]
      .filter((e) => !e.spec.flood && e.spec.deadlineMs !== undefined)
      .flatMap((e) => e.answers.map((a) => a.wallMs))
    const silentLate = silentWalls.filter((w) => w > SOAK_DEADLINE_MS + SLACK_MS).length
    const sum = (key: 'non200' | 'transportErrors' | 'unexpectedResult') =>
      categories.reduce((n, c) => n + c[key], 0)
    const endVsBaseline = end.rss / baseline.rss - 1
    const heapBefore = baseline.memory.keptMiB ?? NaN
    const heapAfter = memoryEnd?.keptMiB ?? NaN
    const heapGrowth = heapAfter / heapBefore - 1
    const pct = (x: number) => `${(x * 100).toFixed(1)} %`
    const verdicts = [
      {
        check: 'exporter still running at the end',
        pass: exit === undefined,
        detail: exit ?? `pid ${pid} alive`,
      },
      {
        check: 'RSS at the end within 10 % of the baseline',
        pass: endVsBaseline <= 0.1,
        detail: `baseline ${baseline.rss.toFixed(1)} MiB, end ${end.rss.toFixed(1)} MiB (${pct(endVsBaseline)}), max ${maxRss.toFixed(1)} MiB`,
      },
      {
        check:
          'the heap kept (V8 heap used after a full GC, compiled code aside) within 10 % of the baseline',
        pass: heapGrowth <= 0.1,
        detail: `baseline ${heapBefore.toFixed(1)} MiB, end ${heapAfter.toFixed(1)} MiB (${pct(heapGrowth)}); RSS after the GC ${baseline.collected.toFixed(1)} and ${end.collected.toFixed(1)} MiB (V8 keeps its young generation's pages or gives them back, as it sees fit)`,
      },
      {
        check: 'open fds back to the baseline',
        pass: endAfterWait <= baseline.fds,
        detail: `baseline ${baseline.fds}, end ${end.fds} (after up to 10 s more: ${endAfterWait}), max ${maxFds}`,
      },
      {
        check: `no flood answer later than deadline + ${SLACK_MS} ms (${SOAK_DEADLINE_MS + SLACK_MS} ms)`,
        pass: floods.late === 0 && floods.count > 0,
        detail: `${floods.late} of ${floods.count} late; max ${floods.maxMs.toFixed(0)} ms, p99 ${floods.p99Ms.toFixed(0)} ms`,
      },
      {
        check: `(also) no silent-server answer later than deadline + ${SLACK_MS} ms`,
        pass: silentLate === 0 && silentWalls.length > 0,
        detail: `${silentLate} of ${silentWalls.length} late; max ${Math.max(...silentWalls).toFixed(0)} ms, p99 ${quantile(silentWalls, 0.99).toFixed(0)} ms`,
      },
    ]
    return {
      probes: o.probes,
      completed,
      warmup: o.warmup,
      concurrency: o.concurrency,
      deadlineMs: SOAK_DEADLINE_MS,
      slackMs: SLACK_MS,
      settleMs: o.settleMs,
      seconds,
      probesPerSecond: completed / seconds,
      rssMiB: {
        idle: idle.rss,
        baseline: baseline.rss,
        maxWarmup,
        max: maxRss,
        end: end.rss,
        baselineCollected: baseline.collected,
        endCollected: end.collected,
        endVsBaseline,
        partsCollected: { baseline: baseline.parts, end: partsEnd },
      },
      fds: { idle: idle.fds, baseline: baseline.fds, max: maxFds, end: end.fds, endAfterWait },
      nodeMemory: { baseline: baseline.memory, end: memoryEnd },
      timeline,
      non200: sum('non200'),
      transportErrors: sum('transportErrors'),
      unexpectedResult: sum('unexpectedResult'),
      floods,
      categories,
      exporterExit: exit,
      hostile: await o.hostile.stats().catch((err: unknown) => String(err)),
      verdicts,
    }
  } finally {
    clearInterval(sampler)
  }
}
