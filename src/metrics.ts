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

/** Sets an info-style gauge (value 1) for each label set. */
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
  for (const row of rows) gauge.set({ ...extra, ...row }, 1)
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
