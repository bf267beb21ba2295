// The soak's results as markdown: the figures, the verdicts, one row per kind of probe, refusals seen.
import type { SoakResult } from './soak.ts'

const f = (n: number | undefined, digits = 1) =>
  n === undefined || Number.isNaN(n) ? '–' : n.toFixed(digits)

export function soakMarkdown(r: SoakResult): string {
  const lines = [
    `### Soak: ${r.completed} of ${r.probes} mixed probes at concurrency ${r.concurrency} (after ${r.warmup} warm-up)`,
    '',
    '| figure | value |',
    '|---|---|',
    `| exporter RSS after a full GC: baseline (after warm-up and ${r.settleMs / 1000} s settle) → end (${r.settleMs / 1000} s settle) | ${f(r.rssMiB.baselineCollected)} → ${f(r.rssMiB.endCollected)} MiB (${f((r.rssMiB.endCollected / r.rssMiB.baselineCollected - 1) * 100)} %) |`,
    `| the same in parts, anonymous + file-backed (the program's pages): baseline → end | ${f(r.rssMiB.partsCollected.baseline.anon)} + ${f(r.rssMiB.partsCollected.baseline.file)} → ${f(r.rssMiB.partsCollected.end?.anon)} + ${f(r.rssMiB.partsCollected.end?.file)} MiB |`,
    `| exporter RSS as found: idle / baseline / max during the run / end | ${f(r.rssMiB.idle)} / ${f(r.rssMiB.baseline)} / ${f(r.rssMiB.max)} / ${f(r.rssMiB.end)} MiB (end ${f(r.rssMiB.endVsBaseline * 100)} % vs baseline; max during warm-up ${f(r.rssMiB.maxWarmup)} MiB) |`,
    `| V8 heap used / used outside compiled code / heap total / external (Buffers) after a full GC: baseline → end | ${f(r.nodeMemory.baseline.heapUsedMiB)} / ${f(r.nodeMemory.baseline.keptMiB)} / ${f(r.nodeMemory.baseline.heapTotalMiB)} / ${f(r.nodeMemory.baseline.externalMiB)} → ${f(r.nodeMemory.end?.heapUsedMiB)} / ${f(r.nodeMemory.end?.keptMiB)} / ${f(r.nodeMemory.end?.heapTotalMiB)} / ${f(r.nodeMemory.end?.externalMiB)} MiB |`,
    `| V8 heap spaces (committed) after a full GC: baseline → end | ${spaces(r.nodeMemory.baseline.spacesMiB)} → ${spaces(r.nodeMemory.end?.spacesMiB)} MiB |`,
    `| RSS after each tenth of the probes | ${r.timeline.map((t) => f(t.rssMiB, 0)).join(', ')} MiB |`,
    `| open fds: idle / baseline / max / end (after up to 10 s more) | ${r.fds.idle} / ${r.fds.baseline} / ${r.fds.max} / ${f(r.fds.end, 0)} (${f(r.fds.endAfterWait, 0)}) |`,
    `| throughput | ${f(r.probesPerSecond)} probes/s (${f(r.seconds)} s) |`,
    `| flood answers (deadline ${r.deadlineMs} ms) | max ${f(r.floods.maxMs, 0)} ms, p99 ${f(r.floods.p99Ms, 0)} ms; ${r.floods.late} of ${r.floods.count} later than ${r.deadlineMs + r.slackMs} ms |`,
    `| non-200 answers / no answer / unexpected probe_success | ${r.non200} / ${r.transportErrors} / ${r.unexpectedResult} |`,
    ...(r.exporterExit ? [`| exporter | **${r.exporterExit}** |`] : []),
    '',
    ...r.verdicts.map((v) => `- **${v.pass ? 'PASS' : 'FAIL'}** ${v.check}: ${v.detail}`),
    '',
    '| kind | n | expected | non-200 | no answer | unexpected | answer p50 / p99 / max ms | reported max ms | late | biggest answer | outcome (failed phase: count) |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    ...r.categories.map(
      (c) =>
        `| ${c.category} | ${c.count} | ${c.expectSuccess ? 'success' : 'failure'}${c.deadlineMs ? `, ≤ ${c.deadlineMs} ms` : ''} | ${c.non200} | ${c.transportErrors} | ${c.unexpectedResult} | ${f(c.wallP50Ms, 0)} / ${f(c.wallP99Ms, 0)} / ${f(c.wallMaxMs, 0)} | ${f(c.reportedMaxMs, 0)} | ${c.deadlineMs ? c.lateOverSlack : '–'} | ${bytes(c.maxBodyBytes)} | ${Object.entries(
          c.failedPhases,
        )
          .map(([k, v]) => `${k}: ${v}`)
          .join(', ')} |`,
    ),
  ]
  const refusals = r.categories.flatMap((c) =>
    Object.entries(c.refusals).map(([status, text]) => `- ${c.category}, HTTP ${status}: ${text}`),
  )
  if (refusals.length > 0) lines.push('', 'Refusals (the first of each status, per kind):', '', ...refusals)
  return lines.join('\n') + '\n'
}

function bytes(n: number) {
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`
  return `${n} B`
}

function spaces(m: Record<string, number> | undefined) {
  if (m === undefined) return '–'
  return Object.entries(m)
    .map(([space, mib]) => `${space.replace(/_space$/, '')} ${f(mib)}`)
    .join(', ')
}
