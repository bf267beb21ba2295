// The landing page: version, modules, recent probes with links to their debug logs.
import type { Config } from './config.ts'
import type { ProbeRecord } from './history.ts'

const escapeHtml = (text: string) =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
  )

export function landingPage(version: string, config: Config, records: readonly ProbeRecord[]): string {
  const modules = Object.entries(config.modules)
    .map(([name, m]) => `<tr><td>${escapeHtml(name)}</td><td>${m.prober}</td><td>${m.timeout}s</td></tr>`)
    .join('\n')
  const rows = records
    .map(
      (r) => `<tr class="${r.success ? 'ok' : 'fail'}">
  <td>${escapeHtml(r.time.toISOString())}</td><td>${escapeHtml(r.module)}</td><td>${escapeHtml(r.target)}</td>
  <td>${r.success ? 'success' : 'failure'}</td><td>${escapeHtml(r.failedPhase ?? '')}</td>
  <td>${r.durationSeconds.toFixed(3)}s</td><td><a href="logs?id=${r.id}">logs</a></td></tr>`,
    )
    .join('\n')
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mailprobe_exporter</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
  table { border-collapse: collapse; margin-bottom: 2em; }
  th, td { border: 1px solid #ccc; padding: 0.25em 0.75em; text-align: left; }
  tr.fail td { background: #fde8e8; }
  tr.ok td { background: #eef8ee; }
  code { background: #f4f4f4; padding: 0 0.2em; }
</style>
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
