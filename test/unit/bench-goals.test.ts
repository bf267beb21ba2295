// The benchmark's goals table: each goal judged MET or SHORT by how much, and the STARTTLS/implicit tls comparison.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { costGoals, type CostFigures } from '../../bench/goals.ts'
import { measureTlsPhases } from '../../bench/tls-phase.ts'
import type { Sample } from '../helpers/metrics.ts'

const phase = (protocol: string, name: string, ms: number): Sample => ({
  name: `probe_${protocol}_duration_seconds`,
  labels: { phase: name },
  value: ms / 1000,
})

const figures = (over: Partial<CostFigures> = {}): CostFigures => ({
  cpuMsPerProbe: { mailprobe: 4, blackbox: 2 },
  perSecondAt50: { mailprobe: 300, blackbox: 200, concurrency: 50 },
  rssIdleMiB: {
    mailprobe: { rss: 50, anon: 20, file: 30 },
    blackbox: { rss: 15, anon: 5, file: 10 },
    settleMs: 2000,
  },
  rssPeakMiB: { mailprobe: 120, mailprobeAnon: 80, probe: 'SMTP STARTTLS', blackbox: 30, concurrency: 50 },
  medianMs: { mailprobe: 4.5, rawNode: 4 },
  tlsPhases: [
    {
      protocol: 'imap',
      probes: 10,
      starttls: { tls: 3, banner: 10 },
      implicit: { tls: 5, banner: 0.5 },
      differenceMs: -2,
    },
  ],
  roundtripMs: { imap: 15, pop3: 40, runs: 10 },
  ...over,
})

const byGoal = (goals: ReturnType<typeof costGoals>, start: string) => {
  const goal = goals.find((g) => g.goal.startsWith(start))
  assert.ok(goal, `no goal starting ${JSON.stringify(start)}`)
  return goal
}

test('goals: each is MET or SHORT by how far past its limit, on the value as shown', () => {
  const goals = costGoals(figures())
  const cpu = byGoal(goals, 'CPU per probe')
  assert.equal(cpu.measured, 2)
  assert.equal(cpu.met, false)
  assert.equal(cpu.shortBy, 0.8)
  assert.equal(cpu.verdict, 'SHORT: 2.00x vs ≤1.20x: short by 0.80x')
  const throughput = byGoal(goals, 'Throughput at 50')
  assert.equal(throughput.met, true)
  assert.equal(throughput.verdict, 'MET: 1.50x vs ≥1.00x')
  // 50 MiB is 52.4 MB: the memory goals are in MB, not eased by reading MiB
  const idle = byGoal(goals, 'RSS at idle')
  assert.equal(idle.measured, 52.4)
  assert.match(idle.from, /VmRSS 50\.0 MiB \(20\.0 anonymous \+ 30\.0 file-backed/)
  assert.equal(byGoal(goals, 'RSS under 50-way').verdict, 'SHORT: 125.8 MB vs ≤100.0 MB: short by 25.8 MB')
  assert.equal(byGoal(goals, '/probe answer time').met, true)
  // 1.2049 shows as 1.20x, so it is met rather than "short by 0.00x"
  const edge = byGoal(costGoals(figures({ cpuMsPerProbe: { mailprobe: 2.4098, blackbox: 2 } })), 'CPU')
  assert.equal(edge.verdict, 'MET: 1.20x vs ≤1.20x')
})

test('goals: the tls phase after STARTTLS is judged by its distance from implicit TLS, either way', () => {
  const tls = byGoal(costGoals(figures()), 'tls phase after IMAP STARTTLS')
  assert.equal(tls.measured, 2)
  assert.equal(tls.verdict, 'SHORT: 2.00 ms vs ≤1.00 ms: short by 1.00 ms')
  assert.equal(tls.from, 'tls 3.00 − 5.00 ms; banner 10.00 and 0.50 ms (10 probes of each, in turn)')
  const roundtrip = byGoal(costGoals(figures()), 'Round trip by POP3')
  assert.equal(roundtrip.verdict, 'MET: 25.00 ms vs ≤100.00 ms')
})

test('measureTlsPhases: medians of tls and banner per module, the two modules in turn', async () => {
  const calls: string[] = []
  // STARTTLS: tls 3 or 4 ms; implicit TLS: 3.5 or 4.5 ms
  let n = 0
  const probe = (module: string): Promise<Sample[]> => {
    calls.push(module)
    const odd = n++ % 4 < 2
    return Promise.resolve(
      module === 'starttls'
        ? [phase('pop3', 'banner', 10), phase('pop3', 'tls', odd ? 3 : 4)]
        : [phase('pop3', 'banner', 0.5), phase('pop3', 'tls', odd ? 3.5 : 4.5)],
    )
  }
  const [result] = await measureTlsPhases(
    [
      {
        protocol: 'pop3',
        starttls: { module: 'starttls', target: 't' },
        implicit: { module: 'implicit', target: 't' },
      },
    ],
    6,
    probe,
  )
  assert.ok(result)
  assert.deepEqual(calls.slice(0, 4), ['starttls', 'implicit', 'starttls', 'implicit'])
  assert.equal(calls.length, 2 * (5 + 6)) // 5 warm-up probes of each first
  assert.equal(result.probes, 6)
  // nearest-rank medians of [4, 3, 4, 3, 4, 3] and [4.5, 3.5, ...]
  assert.equal(result.starttls.tls, 4)
  assert.equal(result.implicit.tls, 4.5)
  assert.equal(result.starttls.banner, 10)
  assert.equal(result.implicit.banner, 0.5)
  assert.equal(result.differenceMs, -0.5)
})

test('measureTlsPhases: an answer without a tls phase is an error, not a zero', async () => {
  await assert.rejects(
    measureTlsPhases(
      [{ protocol: 'smtp', starttls: { module: 'a', target: 't' }, implicit: { module: 'b', target: 't' } }],
      1,
      () => Promise.resolve([phase('smtp', 'banner', 1)]),
    ),
    /no tls phase in the smtp probe's answer/,
  )
})
