// The metric catalogue's building blocks: a MetricDef names a metric once (name, help, type, labels),
// and every per-probe gauge or counter is made from one, get-or-create in the probe's registry.
import { Counter, Gauge, type MetricValue, type Registry } from 'prom-client'

export type Labels = Record<string, string>

export interface MetricDef {
  readonly name: string
  readonly help: string
  readonly type: 'gauge' | 'counter' | 'histogram'
  /** The labels the metric itself has (a leg's `leg` label comes on top, see perLeg). */
  readonly labels: readonly string[]
  /** Set by a dialogue that may run as a round trip's leg: then it also carries `leg`. */
  readonly perLeg?: boolean
  /** Label values that dashboards may rely on (phases, stages). */
  readonly values?: Readonly<Record<string, readonly string[]>>
}

/** A metric definition, typed as written (for phase lists and label names). */
export const defineMetric = <const D extends MetricDef>(definition: D): D => definition

/** A phase duration metric: probe_<prober>_duration_seconds{phase}, with its phases listed. */
export function phaseMetric<const P extends string>(
  prober: string,
  phases: readonly P[],
  perLeg: boolean,
): MetricDef & { readonly values: { readonly phase: readonly P[] } } {
  return {
    name: `probe_${prober}_duration_seconds`,
    help: `Duration of ${prober} probe by phase, in seconds`,
    type: 'gauge',
    labels: ['phase'],
    perLeg,
    values: { phase: phases },
  }
}

/** At most this many series per info metric and probe, and label values this long: servers choose them. */
export const MAX_INFO_ROWS = 100
export const MAX_LABEL_VALUE = 200

/** The gauge of `definition` in this registry, created on first use; `extra` are the leg's labels. */
export function gaugeOf(registry: Registry, definition: MetricDef, extra: Labels = {}): Gauge {
  const existing = registry.getSingleMetric(definition.name)
  if (existing instanceof Gauge) return existing
  return new Gauge({
    name: definition.name,
    help: definition.help,
    labelNames: [...Object.keys(extra), ...definition.labels],
    registers: [registry],
  })
}

/** The counter of `definition` in this registry, created on first use. */
export function counterOf(registry: Registry, definition: MetricDef): Counter {
  const existing = registry.getSingleMetric(definition.name)
  if (existing instanceof Counter) return existing
  return new Counter({
    name: definition.name,
    help: definition.help,
    labelNames: [...definition.labels],
    registers: [registry],
  })
}

/** Sets a gauge to `value`, with the leg's labels (extra) and the metric's own (labels). */
export function setGauge(
  registry: Registry,
  definition: MetricDef,
  value: number,
  extra: Labels = {},
  labels: Labels = {},
): void {
  gaugeOf(registry, definition, extra).set({ ...extra, ...labels }, value)
}

/** Sets an info-style gauge (value 1) for each label set (the first MAX_INFO_ROWS, values cut to MAX_LABEL_VALUE). */
export function setInfo(
  registry: Registry,
  definition: MetricDef,
  rows: readonly Labels[],
  extra: Labels = {},
): void {
  if (rows.length === 0) return
  const gauge = gaugeOf(registry, definition, extra)
  const cut = (labels: Labels) =>
    Object.fromEntries(Object.entries(labels).map(([k, v]) => [k, v.slice(0, MAX_LABEL_VALUE)]))
  for (const row of rows.slice(0, MAX_INFO_ROWS)) gauge.set({ ...extra, ...cut(row) }, 1)
}

/** A gauge of a probe (not of a leg). */
export const gauge = <const L extends readonly string[] = []>(
  name: string,
  help: string,
  labels: L = [] as unknown as L,
  values?: Readonly<Record<string, readonly string[]>>,
) => defineMetric({ name, help, type: 'gauge', labels, ...(values ? { values } : {}) })

/** A gauge set by a dialogue, which carries `leg` when the dialogue is a round trip's leg. */
export const legGauge = <const L extends readonly string[] = []>(
  name: string,
  help: string,
  labels: L = [] as unknown as L,
  values?: Readonly<Record<string, readonly string[]>>,
) => defineMetric({ name, help, type: 'gauge', labels, perLeg: true, ...(values ? { values } : {}) })

/** A counter of a probe. */
export const counter = (name: string, help: string) =>
  defineMetric({ name, help, type: 'counter', labels: [] })

/**
 * Every series of each source registry into `registry`, with the source's `labels` on top of their own
 * (an mx: probe folds in each mail exchanger's probe so). Gauges and counters; nothing else is made per probe.
 */
export async function foldRegistries(
  registry: Registry,
  sources: readonly { registry: Registry; labels: Labels }[],
): Promise<void> {
  const families = new Map<string, { help: string; type: string; rows: MetricValue<string>[] }>()
  for (const source of sources)
    for (const family of await source.registry.getMetricsAsJSON()) {
      const entry = families.get(family.name) ?? { help: family.help, type: String(family.type), rows: [] }
      families.set(family.name, entry)
      for (const v of family.values) entry.rows.push({ ...v, labels: { ...v.labels, ...source.labels } })
    }
  for (const [name, { help, type, rows }] of families) {
    const labelNames = [...new Set(rows.flatMap((row) => Object.keys(row.labels)))]
    const options = { name, help, labelNames, registers: [registry] }
    if (type === 'counter') {
      const counter = new Counter(options)
      for (const row of rows) counter.inc(row.labels, row.value)
    } else {
      const gauge = new Gauge(options)
      for (const row of rows) gauge.set(row.labels, row.value)
    }
  }
}
