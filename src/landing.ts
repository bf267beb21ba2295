// The landing page: version, modules, recent probes with links to their details (phase waterfall) and
// debug logs; and each probe's details page (/probe-details?id=N).
import type { Config } from './config.ts'
import type { ProbeRecord } from './history.ts'
import { waterfallSvg } from './waterfall.ts'

const escapeHtml = (text: string) =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
  )

const STYLE = `<style>
  body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
  table { border-collapse: collapse; margin-bottom: 2em; }
  th, td { border: 1px solid #ccc; padding: 0.25em 0.75em; text-align: left; }
  tr.fail td { background: #fde8e8; }
  tr.ok td { background: #eef8ee; }
  code { background: #f4f4f4; padding: 0 0.2em; }
  svg.waterfall { max-width: 100%; height: auto; border: 1px solid #ccc; }
</style>`

export function landingPage(version: string, config: Config, records: readonly ProbeRecord[]): string {
  const modules = Object.entries(config.modules)
    .map(([name, m]) => `<tr><td>${escapeHtml(name)}</td><td>${m.prober}</td><td>${m.timeout}s</td></tr>`)
    .join('\n')
  const rows = records
    .map(
      (r) => `<tr class="${r.success ? 'ok' : 'fail'}">
  <td>${escapeHtml(r.time.toISOString())}</td><td>${escapeHtml(r.module)}</td><td>${escapeHtml(r.target)}</td>
  <td>${r.success ? 'success' : 'failure'}</td><td>${escapeHtml(r.failedPhase ?? '')}</td>
  <td>${r.durationSeconds.toFixed(3)}s</td><td><a class="details" href="probe-details?id=${r.id}">details</a> · <a href="logs?id=${r.id}">logs</a></td></tr>`,
    )
    .join('\n')
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mailprobe_exporter</title>
${STYLE}
</head>
<body>
<h1>mailprobe_exporter</h1>
<p>Version <span id="version">${escapeHtml(version)}</span>.
Probe with <code>probe?module=NAME&amp;target=HOST:PORT</code>; add <code>&amp;debug=true</code> for the protocol transcript.</p>
<p><a href="metrics">Metrics</a> · <a href="config">Configuration</a> · <a href="-/healthy">Health</a></p>
<h2>Modules</h2>
<table id="modules">
<thead><tr><th>Module</th><th>Prober</th><th>Timeout</th></tr></thead>
<tbody>
${modules}
</tbody>
</table>
<h2>Recent probes</h2>
<p>Failures are kept longer than successes.</p>
<table id="probes">
<thead><tr><th>Time</th><th>Module</th><th>Target</th><th>Result</th><th>Failed phase</th><th>Duration</th><th>Debug</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>
</body>
</html>
`
}

/** One probe of the history: what it was, how it ended, its phase waterfall, and a link to its debug log. */
export function probeDetailsPage(r: ProbeRecord): string {
  const result = r.success ? 'success' : 'failure'
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>probe ${r.id}: ${escapeHtml(r.module)} ${escapeHtml(r.target)} · mailprobe_exporter</title>
${STYLE}
</head>
<body>
<p><a href="./">mailprobe_exporter</a></p>
<h1>Probe ${r.id}</h1>
<table id="probe">
<tbody>
<tr><th>Module</th><td id="module">${escapeHtml(r.module)}</td></tr>
<tr><th>Target</th><td id="target">${escapeHtml(r.target)}</td></tr>
<tr><th>Time</th><td id="time">${escapeHtml(r.time.toISOString())}</td></tr>
<tr class="${r.success ? 'ok' : 'fail'}"><th>Result</th><td id="result">${result}</td></tr>
<tr><th>Duration</th><td id="duration">${r.durationSeconds.toFixed(3)}s</td></tr>
<tr><th>Failed phase</th><td id="failed-phase">${escapeHtml(r.failedPhase ?? '')}</td></tr>
</tbody>
</table>
<h2>Phases</h2>
<p>Each step of the probe on one time axis, in the order the steps began. Durations that a library
reported (nodemailer's and imapflow's logs) have no start of their own: they are drawn from the end of
the step before.</p>
<figure id="waterfall">
${waterfallSvg(r.phases, r.failedPhase, r.durationSeconds)}
</figure>
<p><a id="logs" href="logs?id=${r.id}">Debug log</a> (transcript, metrics and module) ·
<a href="./">all recent probes</a></p>
</body>
</html>
`
}
