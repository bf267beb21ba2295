// A probe's steps as an inline SVG waterfall (for /probe-details): one row per step, in the order the
// steps began, on a common time axis in ms. Pure: no script, no external assets, every text escaped.
import type { PhaseStep } from './phases.ts'

const escapeXml = (text: string) =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
  )

const ROW = 22
const BAR = 14
const AXIS = 28
const CHART = 560
/** Room right of the chart for the last bar's duration label. */
const TAIL = 130
const PAD = 8
/** Bars are told apart by their phase metric (a round trip's own phases, its SMTP leg, its IMAP leg). */
const PALETTE = ['#3f72c4', '#2a9d8f', '#7b61c9', '#5b7083']
export const FAILED_COLOUR = '#d32f2f'

/** 0.42 ms, 12.3 ms, 1234 ms. */
function formatMs(ms: number): string {
  if (ms < 1) return `${ms.toFixed(2)} ms`
  if (ms < 100) return `${ms.toFixed(1)} ms`
  return `${ms.toFixed(0)} ms`
}

/** A round tick step (1, 2 or 5 times a power of ten) giving about five ticks over `span` ms. */
function tickStep(span: number): number {
  const raw = span / 5
  const power = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw)
  return step ?? 10 * power
}

/** The row name: the step's full name, after its mail host for a sub-probe's step. */
const rowName = (step: PhaseStep) => (step.host === undefined ? step.name : `${step.host}: ${step.name}`)

/** Names longer than the label column holds are cut (the bar's tooltip has the whole name). */
const MAX_LABEL = 44
const cut = (name: string) => (name.length > MAX_LABEL ? `${name.slice(0, MAX_LABEL - 1)}…` : name)

/**
 * The waterfall of one probe. `failedPhase` (the record's, as failures name phases) marks the last step
 * of that name in red, with data-failed="true"; a failure that no step names (the probe gave up before
 * the phase's duration was known, as a silent server's banner) gets a red marker row of its own, from
 * the end of the last step to the end of the probe. `totalSeconds` is the probe's duration: the axis
 * spans it, or the steps if they reach further (they are timed from the ProbePhases' creation).
 */
export function waterfallSvg(
  steps: readonly PhaseStep[],
  failedPhase: string | undefined,
  totalSeconds: number,
): string {
  let failedIndex = -1
  if (failedPhase !== undefined)
    for (let i = steps.length - 1; i >= 0 && failedIndex < 0; i--)
      if (steps[i]?.name === failedPhase) failedIndex = i
  const markerRow = failedPhase !== undefined && failedIndex < 0
  const lastEnd = steps.reduce((end, s) => Math.max(end, s.start + s.seconds * 1000), 0)
  const total = Number.isFinite(totalSeconds) ? Math.max(0, totalSeconds) * 1000 : 0
  const span = Math.max(total, lastEnd, 1)

  const names = steps.map(rowName)
  if (markerRow) names.push(failedPhase)
  const labelWidth = Math.min(320, Math.max(120, 16 + 7 * Math.max(0, ...names.map((n) => cut(n).length))))
  const x0 = PAD + labelWidth
  const x = (ms: number) => x0 + (Math.max(0, ms) / span) * CHART
  const rows = steps.length + (markerRow ? 1 : 0)
  const width = x0 + CHART + TAIL
  const height = AXIS + Math.max(1, rows) * ROW + PAD

  const parts: string[] = []
  const step = tickStep(span)
  for (let i = 0; i * step <= span * (1 + 1e-9); i++) {
    const t = Number((i * step).toPrecision(6))
    const tx = x(t).toFixed(1)
    parts.push(
      `<line class="tick" x1="${tx}" y1="${AXIS - 6}" x2="${tx}" y2="${height - PAD}" stroke="#e3e3e3"/>`,
      `<text x="${tx}" y="${AXIS - 10}" text-anchor="middle" fill="#666">${t} ms</text>`,
    )
  }

  const colours = new Map<string, string>()
  const colourOf = (metric: string) => {
    let colour = colours.get(metric)
    if (colour === undefined) {
      colour = PALETTE[colours.size % PALETTE.length] ?? '#3f72c4'
      colours.set(metric, colour)
    }
    return colour
  }
  /** One row: its name left of the chart, its bar, and its duration right of the bar. */
  const row = (
    index: number,
    name: string,
    startMs: number,
    ms: number,
    fill: string,
    attrs: string,
    tooltip: string,
    note: string,
  ) => {
    const y = AXIS + index * ROW
    const failed = note !== ''
    const bx = x(startMs)
    // A failed step is never too thin to see, even when it failed at once.
    const bw = Math.max(failed ? 4 : 1, x(startMs + ms) - bx)
    const label = `${formatMs(ms)}${failed ? ` ${note}` : ''}`
    // The duration goes right of the bar, else left of it, else inside it (roughly 6.5 px a character).
    const room = label.length * 6.5
    const [lx, anchor, colour] =
      bx + bw + 4 + room <= width
        ? [bx + bw + 4, 'start', failed ? '#b71c1c' : '#444']
        : bx - 4 - room >= x0
          ? [bx - 4, 'end', failed ? '#b71c1c' : '#444']
          : [bx + bw - 4, 'end', '#fff']
    return `<g class="step"${attrs}>
<title>${escapeXml(tooltip)}</title>
<text x="${x0 - 6}" y="${y + BAR - 2}" text-anchor="end" fill="${failed ? '#b71c1c' : '#222'}"${failed ? ' font-weight="bold"' : ''}>${escapeXml(cut(name))}</text>
<rect class="bar"${attrs} x="${bx.toFixed(1)}" y="${y}" width="${bw.toFixed(1)}" height="${BAR}" rx="2" fill="${fill}"/>
<text x="${lx.toFixed(1)}" y="${y + BAR - 2}" text-anchor="${anchor}" fill="${colour}">${escapeXml(label)}</text>
</g>`
  }

  steps.forEach((s, i) => {
    const failed = i === failedIndex
    const ms = s.seconds * 1000
    const attrs =
      ` data-name="${escapeXml(s.name)}" data-seconds="${s.seconds}"` +
      (s.host === undefined ? '' : ` data-host="${escapeXml(s.host)}"`) +
      (failed ? ' data-failed="true"' : '')
    const where = [s.host === undefined ? '' : `host ${s.host}`, s.leg === undefined ? '' : `leg ${s.leg}`]
      .filter((w) => w !== '')
      .join(', ')
    const tooltip = `${rowName(s)}: ${formatMs(ms)} from ${formatMs(s.start)} (${s.metric}{phase="${s.phase}"}${where === '' ? '' : `, ${where}`})${failed ? ', failed' : ''}`
    parts.push(
      row(
        i,
        rowName(s),
        s.start,
        ms,
        failed ? FAILED_COLOUR : colourOf(s.metric),
        attrs,
        tooltip,
        failed ? '✗ failed' : '',
      ),
    )
  })
  if (markerRow) {
    const attrs = ` data-name="${escapeXml(failedPhase)}" data-failed="true" data-marker="true"`
    const from = Math.min(lastEnd, span)
    parts.push(
      row(
        steps.length,
        failedPhase,
        from,
        span - from,
        FAILED_COLOUR,
        attrs,
        `failed in phase ${failedPhase}, for which no step was timed`,
        '✗ failed (no step timed)',
      ),
    )
  }
  if (rows === 0) parts.push(`<text x="${x0}" y="${AXIS + BAR - 2}" fill="#666">no steps recorded</text>`)

  const summary = `Phase waterfall: ${steps.length} step${steps.length === 1 ? '' : 's'} over ${formatMs(span)}${failedPhase === undefined ? '' : `, failed in ${failedPhase}`}`
  return `<svg xmlns="http://www.w3.org/2000/svg" class="waterfall" role="img" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="12">
<title>${escapeXml(summary)}</title>
<rect x="0" y="0" width="${width}" height="${height}" fill="#fff"/>
${parts.join('\n')}
</svg>`
}
