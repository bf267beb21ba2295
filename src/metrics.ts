// Per-probe gauges: get-or-create in the probe's registry, so legs of a round trip can share a name with a label.
import { Gauge, type Registry } from 'prom-client'

export type Labels = Record<string, string>

/** The gauge `name` of this registry, created on first use with the given label names. */
export function probeGauge(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly string[] = [],
): Gauge {
  const existing = registry.getSingleMetric(name)
  if (existing instanceof Gauge) return existing
  return new Gauge({ name, help, labelNames: [...labelNames], registers: [registry] })
}

/** At most this many series per info metric and probe, and label values this long: servers choose them. */
export const MAX_INFO_ROWS = 100
export const MAX_LABEL_VALUE = 200

/** Sets an info-style gauge (value 1) for each label set (the first MAX_INFO_ROWS, values cut to MAX_LABEL_VALUE). */
export function setInfo(
  registry: Registry,
  name: string,
  help: string,
  rows: readonly Labels[],
  extra: Labels = {},
): void {
  const first = rows[0]
  if (!first) return // label names come from the rows: nothing to register without one
  const labelNames = [...Object.keys(extra), ...Object.keys(first)]
  const gauge = probeGauge(registry, name, help, labelNames)
  const cut = (labels: Labels) =>
    Object.fromEntries(Object.entries(labels).map(([k, v]) => [k, v.slice(0, MAX_LABEL_VALUE)]))
  for (const row of rows.slice(0, MAX_INFO_ROWS)) gauge.set({ ...extra, ...cut(row) }, 1)
}

/** Sets a plain gauge, with the extra (leg) labels when there are any. */
export function setGauge(
  registry: Registry,
  name: string,
  help: string,
  value: number,
  extra: Labels = {},
): void {
  probeGauge(registry, name, help, Object.keys(extra)).set(extra, value)
}
