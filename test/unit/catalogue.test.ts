// The metric catalogue (probers/index.ts PROBE_CATALOGUE, exporter-metrics.ts EXPORTER_METRICS) against the
// contract the dashboards and rules are checked with (grafana/metrics.json), and nothing made outside it.
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { CONTRACT_FILE, ROOT } from '../helpers/dashboards.ts'
import { EXPORTER_METRICS } from '../../src/exporter-metrics.ts'
import type { MetricDef } from '../../src/metrics.ts'
import { PROBERS, PROBE_CATALOGUE } from '../../src/probers/index.ts'

interface Contract {
  metrics: Record<
    string,
    { source: string; type: string; labels: string[]; values?: Record<string, string[]> }
  >
}
const contract = (JSON.parse(readFileSync(CONTRACT_FILE, 'utf8')) as Contract).metrics
/** prom-client's default process and Node.js metrics: not ours to define. */
const isDefault = (name: string) => name.startsWith('process_') || name.startsWith('nodejs_')

function compare(catalogue: readonly MetricDef[], source: string) {
  const ours = new Map(catalogue.map((m) => [m.name, m]))
  const theirs = Object.entries(contract).filter(([name, m]) => m.source === source && !isDefault(name))
  for (const [name, entry] of theirs) {
    const m = ours.get(name)
    assert.ok(m, `${name} is in grafana/metrics.json but no prober or dialogue defines it`)
    assert.equal(m.type, entry.type, `${name}: type`)
    const labels = [...(m.perLeg ? ['leg'] : []), ...m.labels].sort()
    assert.deepEqual(labels, [...entry.labels].sort(), `${name}: labels (leg when perLeg)`)
    for (const [label, values] of Object.entries(m.values ?? {}))
      assert.deepEqual([...values], entry.values?.[label], `${name}: the values of ${label}`)
    for (const label of Object.keys(entry.values ?? {}))
      assert.ok(
        m.values?.[label],
        `${name}: grafana/metrics.json lists values of ${label}; the catalogue does not`,
      )
  }
  for (const name of ours.keys())
    assert.ok(
      theirs.some(([n]) => n === name),
      `${name} is set by the exporter but missing from grafana/metrics.json (source ${source})`,
    )
}

test('catalogue: every per-probe metric, its labels and its phases are as grafana/metrics.json says', () => {
  compare(PROBE_CATALOGUE, 'probe')
})

test("catalogue: the exporter's own metrics are as grafana/metrics.json says", () => {
  compare(EXPORTER_METRICS, 'exporter')
})

test('catalogue: a metric name has one definition, shared by every prober that sets it', () => {
  const seen = new Map<string, MetricDef>()
  for (const prober of PROBERS)
    for (const m of prober.metrics) {
      const first = seen.get(m.name)
      assert.ok(first === undefined || first === m, `${m.name} is defined twice (again in ${prober.name})`)
      seen.set(m.name, m)
    }
})

test('catalogue: prom-client metrics are made only from definitions (src/metrics.ts, src/exporter-metrics.ts)', () => {
  const files = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
    )
  const allowed = new Set(['src/metrics.ts', 'src/exporter-metrics.ts'])
  for (const file of files(join(ROOT, 'src'))) {
    const relative = file.slice(ROOT.length)
    if (allowed.has(relative)) continue
    const text = readFileSync(file, 'utf8')
    assert.doesNotMatch(text, /new (Gauge|Counter|Histogram|Summary)\b/, `${relative} makes a metric itself`)
    assert.doesNotMatch(
      text,
      /(setGauge|setInfo|gaugeOf|counterOf)\([^,]+,\s*'/,
      `${relative} names a metric at a call site`,
    )
  }
})
