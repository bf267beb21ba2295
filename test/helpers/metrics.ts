// Reading metrics in tests: from a Registry, or from /probe's text output.
import type { Registry } from 'prom-client'

export type Labels = Record<string, string>

/** The value of one sample; labels must match exactly the given ones (others may exist). */
export async function metricValue(
  registry: Registry,
  name: string,
  labels: Labels = {},
): Promise<number | undefined> {
  const metric = registry.getSingleMetric(name)
  if (!metric) return undefined
  const { values } = await metric.get()
  const found = values.find((v) => Object.entries(labels).every(([k, val]) => String(v.labels[k]) === val))
  return found?.value
}

export interface Sample {
  name: string
  labels: Labels
  value: number
}

/** Parses the Prometheus text format (enough for our own output). */
export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`unparsable metrics line: ${line}`)
    const labels: Labels = {}
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_x, c: string) => (c === 'n' ? '\n' : c))
    samples.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return samples
}

/** The sample's value, or undefined; labels given must match, others may exist. */
export function sampleValue(
  samples: readonly Sample[],
  name: string,
  labels: Labels = {},
): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    ?.value
}
