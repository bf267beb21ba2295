// Prometheus-style durations ("1m30s", "500ms", "10s") to seconds.
const UNIT_SECONDS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy

/** Seconds for a duration string, or undefined when it is not one. */
export function parseDuration(text: string): number | undefined {
  if (text === '') return undefined
  PART.lastIndex = 0
  let total = 0
  let consumed = 0
  for (let m = PART.exec(text); m; m = PART.exec(text)) {
    total += Number(m[1]) * (UNIT_SECONDS[m[2] ?? ''] ?? NaN)
    consumed = PART.lastIndex
  }
  return consumed === text.length && Number.isFinite(total) ? total : undefined
}
