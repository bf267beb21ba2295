// Grafana dashboards and Prometheus rules: the Grafana dashboard model, layout, datasource variable,
// PromQL syntax (lezer and promtool) and every metric, label and phase against grafana/metrics.json.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import ts from 'typescript'
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'
import {
  ROOT,
  RULES_TEST_FILE,
  allPanels,
  analyzePromql,
  contractMetric,
  contractSeriesNames,
  legendLabels,
  loadContract,
  loadDashboards,
  loadRules,
  panelQueries,
  recordedSeries,
  renderExpr,
  selectedNames,
  variableQueries,
  variablesUsed,
  type DashboardJson,
  type Rule,
} from '../helpers/dashboards.ts'

const dashboards = loadDashboards()
const contract = loadContract()
const rules = loadRules()
const recorded = recordedSeries(rules)

test('there are the three dashboards, each with its own uid', () => {
  assert.deepEqual(
    dashboards.map((d) => d.dashboard.uid),
    ['mailprobe-exporter', 'mailprobe-overview', 'mailprobe-target'],
  )
  for (const { dashboard } of dashboards) assert.ok(dashboard.uid.length <= 40, dashboard.uid)
})

// ---------------------------------------------------------------- the Grafana dashboard model

/*
 * @grafana/schema publishes the dashboard model as TypeScript types generated from Grafana's CUE schema
 * (Dashboard, Panel, RowPanel, VariableModel ...) and, for each core panel plugin, the types of its
 * `options` and `fieldConfig.defaults.custom` (TimeSeries, Stat, Table ...). It ships no JSON Schema and no
 * runtime validator, so the strongest check it allows is the compiler's: each dashboard JSON is pasted as an
 * object literal into a virtual TypeScript file and checked with `satisfies` against a stricter version of
 * the model, built from those types:
 *   - enums are compared as their JSON values (a string enum member is not assignable from its string),
 *   - each panel type is tied to its plugin's Options and FieldConfig (a discriminated union on `type`),
 *     so excess-property checks catch misspelt or unknown options, and override ids must name a field
 *     config property of that plugin,
 *   - datasource refs (panels and queries) must be {type: 'prometheus', uid: '${datasource}'},
 *   - targets must be Prometheus queries (expr, refId, instant/range ...; this shape is Grafana's
 *     Prometheus query model, which the package does not include),
 *   - ids and gridPos are required.
 * Layout, ids, variables and PromQL are checked at run time further down.
 */
const SCHEMA = '@grafana/schema/dist/esm/raw/composable'
const MODEL = `
import type { AnnotationQuery, Dashboard, DataQuery, DataTransformerConfig, DashboardLink, GridPos, MatcherConfig, RowPanel, VariableModel } from '@grafana/schema'
import type { FieldConfig as RawFieldConfig, Panel as RawPanel } from '@grafana/schema/dist/esm/raw/dashboard/x/Dashboard_types.gen'
import type * as BarGauge from '${SCHEMA}/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen'
import type * as Heatmap from '${SCHEMA}/heatmap/panelcfg/x/HeatmapPanelCfg_types.gen'
import type * as Stat from '${SCHEMA}/stat/panelcfg/x/StatPanelCfg_types.gen'
import type * as StateTimeline from '${SCHEMA}/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen'
import type * as Table from '${SCHEMA}/table/panelcfg/x/TablePanelCfg_types.gen'
import type * as TimeSeries from '${SCHEMA}/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen'

/** The model as JSON sees it: string enums become their string values. */
type Json<T> = T extends string
  ? \`\${T}\`
  : T extends number | boolean | null | undefined
    ? T
    : T extends readonly (infer U)[]
      ? Json<U>[]
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T

type Datasource = { type: 'prometheus'; uid: '\${datasource}' }

interface PrometheusQuery extends Omit<Json<DataQuery>, 'datasource'> {
  datasource: Datasource
  expr: string
  legendFormat?: string
  instant: boolean
  range: boolean
  format?: 'time_series' | 'table' | 'heatmap'
  editorMode?: 'code' | 'builder'
  interval?: string
  exemplar?: boolean
}

type Override<F> = {
  matcher: Json<MatcherConfig>
  properties: Array<{ id: Exclude<keyof RawFieldConfig, 'custom'> | \`custom.\${string & keyof F}\`; value?: unknown }>
}

type FieldConfigOf<F> = {
  defaults: Omit<Json<RawFieldConfig>, 'custom'> & ([F] extends [never] ? {} : { custom?: Json<F> })
  overrides: Override<F>[]
}

type PanelOf<T extends string, O, F = never> = Omit<
  Json<RawPanel>,
  'type' | 'options' | 'fieldConfig' | 'targets' | 'datasource' | 'gridPos' | 'id' | 'transformations'
> & {
  type: T
  id: number
  gridPos: Json<GridPos>
  datasource: Datasource
  targets: PrometheusQuery[]
  options: Json<O>
  fieldConfig: FieldConfigOf<F>
  transformations?: Json<DataTransformerConfig>[]
}

type KnownPanel =
  | PanelOf<'timeseries', TimeSeries.Options, TimeSeries.FieldConfig>
  | PanelOf<'stat', Stat.Options>
  | PanelOf<'table', Table.Options, Table.FieldConfig>
  | PanelOf<'bargauge', BarGauge.Options>
  | PanelOf<'state-timeline', StateTimeline.Options, StateTimeline.FieldConfig>
  | PanelOf<'heatmap', Heatmap.Options, Heatmap.FieldConfig>

type Row = Omit<Json<RowPanel>, 'panels' | 'gridPos' | 'id'> & { id: number; gridPos: Json<GridPos>; panels: never[] }

export type StrictDashboard = Omit<Json<Dashboard>, 'panels' | 'templating' | 'annotations' | 'links'> & {
  uid: string
  title: string
  annotations: { list: Json<AnnotationQuery>[] }
  links: Json<DashboardLink>[]
  panels: Array<KnownPanel | Row>
  templating: { list: Json<VariableModel>[] }
}
`

function typeCheck(files: Record<string, string>): string[] {
  const dir = join(ROOT, 'test', 'unit')
  const virtual = new Map(Object.entries(files).map(([name, text]) => [join(dir, name), text]))
  const options: ts.CompilerOptions = {
    strict: true,
    exactOptionalPropertyTypes: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2023,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    allowImportingTsExtensions: true,
    types: [],
  }
  const host = ts.createCompilerHost(options)
  const getSourceFile = host.getSourceFile.bind(host)
  const fileExists = host.fileExists.bind(host)
  const readFile = host.readFile.bind(host)
  host.fileExists = (f) => virtual.has(f) || fileExists(f)
  host.readFile = (f) => virtual.get(f) ?? readFile(f)
  host.getSourceFile = (f, lang, ...rest) => {
    const text = virtual.get(f)
    return text === undefined ? getSourceFile(f, lang, ...rest) : ts.createSourceFile(f, text, lang)
  }
  const program = ts.createProgram([...virtual.keys()], options, host)
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const where =
      d.file && d.start !== undefined
        ? `${d.file.fileName.slice(dir.length + 1)}:${d.file.getLineAndCharacterOfPosition(d.start).line + 1}: `
        : ''
    return where + ts.flattenDiagnosticMessageText(d.messageText, '\n')
  })
}

test('every dashboard type-checks against the Grafana dashboard model of @grafana/schema', () => {
  const files: Record<string, string> = { '__dashboard_model__.ts': MODEL }
  for (const { file, dashboard } of dashboards) {
    files[`__${file}__.ts`] =
      `import type { StrictDashboard } from './__dashboard_model__.ts'\n` +
      `export const dashboard = ${JSON.stringify(dashboard, null, 2)} satisfies StrictDashboard\n`
  }
  assert.deepEqual(typeCheck(files), [])
})

test('the model check rejects what Grafana would not understand', () => {
  // The check above is only as good as its ability to fail: feed it broken copies of a real dashboard.
  const overview = dashboards.find((d) => d.dashboard.uid === 'mailprobe-overview')!.dashboard
  const broken = (mutate: (d: DashboardJson) => void): string => {
    const copy = structuredClone(overview)
    mutate(copy)
    return (
      `import type { StrictDashboard } from './__dashboard_model__.ts'\n` +
      `export const dashboard = ${JSON.stringify(copy)} satisfies StrictDashboard\n`
    )
  }
  const firstOf = (d: DashboardJson, type: string) => d.panels.find((p) => p.type === type)!
  const cases: Record<string, string> = {
    'unknown stat option': broken((d) => {
      ;(firstOf(d, 'stat')['options'] as Record<string, unknown>)['textModus'] = 'value'
    }),
    'string enum value that does not exist': broken((d) => {
      ;(firstOf(d, 'stat')['options'] as Record<string, unknown>)['colorMode'] = 'rainbow'
    }),
    'hard-coded datasource': broken((d) => {
      firstOf(d, 'table').datasource = { type: 'prometheus', uid: 'PBFA97CFB590B2093' }
    }),
    'panel without gridPos': broken((d) => {
      delete (firstOf(d, 'timeseries') as Partial<DashboardJson['panels'][number]>).gridPos
    }),
    'override of a field config property the plugin does not have': broken((d) => {
      firstOf(d, 'table').fieldConfig!.overrides[0]!.properties[0]!.id = 'custom.lineWidth'
    }),
  }
  const files: Record<string, string> = { '__dashboard_model__.ts': MODEL }
  for (const [name, text] of Object.entries(cases)) files[`__broken_${name.replaceAll(' ', '_')}__.ts`] = text
  const errors = typeCheck(files)
  for (const name of Object.keys(cases)) {
    const prefix = `__broken_${name.replaceAll(' ', '_')}__.ts:`
    assert.ok(
      errors.some((e) => e.startsWith(prefix)),
      `${name}: no type error (errors: ${errors.join('\n')})`,
    )
  }
})

// ---------------------------------------------------------------- layout, ids, variables

for (const { file, dashboard } of dashboards) {
  test(`${file}: panel ids are unique and every panel fits the 24-column grid without overlapping`, () => {
    const panels = allPanels(dashboard)
    const ids = panels.map((p) => p.id)
    assert.equal(new Set(ids).size, ids.length, `duplicate ids in ${ids.join(',')}`)
    const cells = new Map<string, string>()
    for (const p of panels) {
      const { x, y, w, h } = p.gridPos
      for (const n of [x, y, w, h]) assert.ok(Number.isInteger(n) && n >= 0, `${p.title}: gridPos ${n}`)
      assert.ok(w >= 1 && h >= 1 && x + w <= 24, `${p.title}: gridPos ${JSON.stringify(p.gridPos)}`)
      for (let col = x; col < x + w; col++)
        for (let row = y; row < y + h; row++) {
          const other = cells.get(`${col},${row}`)
          assert.equal(other, undefined, `${p.title} overlaps ${other ?? ''}`)
          cells.set(`${col},${row}`, p.title)
        }
    }
  })

  test(`${file}: the datasource is the variable \${datasource}, in every panel and query`, () => {
    // No __inputs: file provisioning does not resolve them, a datasource variable works for both
    // provisioning and import.
    assert.equal(dashboard['__inputs'], undefined)
    assert.equal(dashboard['__requires'], undefined)
    const dsVars = dashboard.templating.list.filter((v) => v.type === 'datasource')
    assert.deepEqual(
      dsVars.map((v) => [v.name, v.query]),
      [['datasource', 'prometheus']],
    )
    for (const v of dashboard.templating.list.filter((v) => v.type === 'query'))
      assert.deepEqual(v.datasource, { type: 'prometheus', uid: '${datasource}' }, `variable ${v.name}`)
    for (const p of allPanels(dashboard)) {
      if (p.type === 'row') continue
      assert.deepEqual(p.datasource, { type: 'prometheus', uid: '${datasource}' }, p.title)
      assert.ok((p.targets ?? []).length > 0, `${p.title}: no queries`)
      const refIds = (p.targets ?? []).map((t) => t.refId)
      assert.equal(new Set(refIds).size, refIds.length, `${p.title}: duplicate refIds`)
      for (const t of p.targets ?? [])
        assert.deepEqual(t.datasource, { type: 'prometheus', uid: '${datasource}' }, `${p.title} ${t.refId}`)
    }
  })

  test(`${file}: every variable a query uses is defined, and defined before it is used`, () => {
    const builtins = ['__rate_interval', '__interval', '__range', '__range_s', '__range_ms', '__interval_ms']
    const defined: string[] = []
    for (const v of dashboard.templating.list) {
      const query = variableQueries({ ...dashboard, templating: { list: [v] } })[0]
      for (const name of query ? variablesUsed(query.query) : [])
        assert.ok(defined.includes(name), `variable ${v.name} uses $${name}, defined after it or not at all`)
      defined.push(v.name)
    }
    for (const q of panelQueries(dashboard))
      for (const name of [...variablesUsed(q.expr)])
        assert.ok(
          builtins.includes(name) || defined.includes(name),
          `${q.panelTitle}: $${name} is not defined`,
        )
  })

  test(`${file}: field overrides name fields as the organize transformation renamed them`, () => {
    // Grafana matches overrides (and sortBy) against the display name, which a rename changes:
    // an override of "Value #A" does nothing once organize has renamed it to "Last".
    for (const p of allPanels(dashboard)) {
      const transformations = (p['transformations'] ?? []) as { id: string; options: unknown }[]
      const renamed = transformations
        .filter((t) => t.id === 'organize')
        .flatMap((t) =>
          Object.entries((t.options as { renameByName?: Record<string, string> }).renameByName ?? {}),
        )
      if (renamed.length === 0) continue
      for (const { matcher } of p.fieldConfig?.overrides ?? []) {
        const name = String(matcher.options)
        if (matcher.id === 'byName')
          assert.ok(!renamed.some(([from]) => from === name), `${p.title}: override of renamed field ${name}`)
        if (matcher.id === 'byRegexp') {
          const re = new RegExp(`^(?:${name})$`)
          assert.ok(
            !renamed.some(([from, to]) => re.test(from) && !re.test(to)),
            `${p.title}: override /${name}/ matches fields only by their old names`,
          )
        }
      }
      const sortBy = ((p['options'] as { sortBy?: { displayName: string }[] } | undefined)?.sortBy ?? []).map(
        (s) => s.displayName,
      )
      for (const name of sortBy)
        assert.ok(!renamed.some(([from]) => from === name), `${p.title}: sortBy renamed field ${name}`)
    }
  })

  test(`${file}: links to other dashboards name existing uids`, () => {
    const uids = dashboards.map((d) => d.dashboard.uid)
    for (const p of allPanels(dashboard)) {
      const links = [
        ...(p.fieldConfig?.defaults.links ?? []),
        ...(p.fieldConfig?.overrides ?? []).flatMap((o) =>
          o.properties
            .filter((prop) => prop.id === 'links')
            .flatMap((prop) => prop.value as { url: string }[]),
        ),
      ]
      for (const link of links) {
        const uid = /\/d\/([^/?]+)/.exec(link.url)?.[1]
        if (uid !== undefined) assert.ok(uids.includes(uid), `${p.title}: link to unknown dashboard ${uid}`)
      }
    }
  })
}

test('the per-target dashboard shows every phase of every protocol, in dialogue order', () => {
  const target = dashboards.find((d) => d.dashboard.uid === 'mailprobe-target')!.dashboard
  for (const protocol of ['smtp', 'pop3', 'imap', 'roundtrip']) {
    const metric = `probe_${protocol}_duration_seconds`
    const expected = contract.metrics[metric]?.values?.['phase']
    assert.ok(expected, metric)
    const panels = allPanels(target).filter((p) => p.targets?.some((t) => t.expr.includes(metric)))
    assert.ok(panels.length >= 2, `${metric}: a last-probe panel and a panel over time`)
    for (const panel of panels) {
      const phases = (panel.targets ?? []).map((t) => analyzePromql(renderExpr(t.expr)))
      const names = phases.map((f) => f.selectors[0]?.matchers.find((m) => m.label === 'phase')?.value)
      assert.deepEqual(names, expected, panel.title)
      assert.deepEqual(
        panel.targets?.map((t) => t.legendFormat),
        expected,
        `${panel.title}: legends are the phase names`,
      )
    }
  }
})

// ---------------------------------------------------------------- PromQL

interface Expression {
  where: string
  expr: string
  legend?: string | undefined
}

const dashboardExpressions: Expression[] = dashboards.flatMap(({ file, dashboard }) => [
  ...panelQueries(dashboard).map((q) => ({
    where: `${file} "${q.panelTitle}" ${q.refId}`,
    expr: renderExpr(q.expr),
    legend: q.legendFormat,
  })),
  ...variableQueries(dashboard).map((v) => ({
    where: `${file} variable ${v.name}`,
    expr: renderExpr(v.expr),
  })),
])
const ruleExpressions: Expression[] = rules.map((r: Rule) => ({
  where: `rule ${r.alert ?? r.record ?? '?'}`,
  expr: r.expr,
}))
const expressions = [...dashboardExpressions, ...ruleExpressions]

test('every dashboard query has its variables filled in by renderExpr', () => {
  for (const { where, expr } of dashboardExpressions) assert.doesNotMatch(expr, /\$|\[\[/, where)
})

test('every expression parses (lezer-promql)', () => {
  for (const { where, expr } of expressions)
    assert.deepEqual(analyzePromql(expr).errors, [], `${where}: ${expr}`)
})

test('every expression parses with promtool (Prometheus 2.42 parser)', (t) => {
  // promtool has no "parse this expression" command, but `check rules` parses every rule's expr with
  // Prometheus' own parser: dashboard queries and rule expressions become recording rules of a
  // throwaway file.
  const dir = mkdtempSync(join(tmpdir(), 'mailprobe-dashboards-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'expressions.rules.yml')
  const asRules = expressions.map((e, i) => ({ record: `expression_${i}`, expr: e.expr }))
  writeFileSync(file, stringifyYaml({ groups: [{ name: 'expressions', rules: asRules }] }))
  const out = execFileSync('promtool', ['check', 'rules', file], { encoding: 'utf8', stdio: 'pipe' })
  assert.match(out, new RegExp(`SUCCESS: ${asRules.length} rules found`))
})

/** Labels a series of this name can have: its own, the target labels, and for recorded series the rule's. */
function labelsOf(name: string): Set<string> | undefined {
  const metric = contractMetric(contract, name)
  if (metric)
    return new Set([
      ...metric.labels,
      ...contract.targetLabels,
      ...(metric.type === 'histogram' ? ['le'] : []),
    ])
  const extra = recorded.get(name)
  if (extra) return new Set([...contract.targetLabels, ...extra])
  return undefined
}

const seriesNames = [...contractSeriesNames(contract), ...recorded.keys()]
const everyLabel = new Set(
  seriesNames.flatMap((name) => [...(labelsOf(name) ?? [])]).concat(['__name__', 'alertname', 'alertstate']),
)

test('every metric used in dashboards and rules is in grafana/metrics.json or made by a recording rule', () => {
  for (const { where, expr } of expressions)
    for (const selector of analyzePromql(expr).selectors) {
      const names = selectedNames(selector, seriesNames)
      assert.ok(names.length > 0, `${where}: ${selector.text} selects no known metric`)
      for (const name of names) assert.ok(labelsOf(name), `${where}: ${name} is not in the metric contract`)
    }
})

test('every label matcher names a label the metric has, and a value the contract allows', () => {
  for (const { where, expr } of expressions)
    for (const selector of analyzePromql(expr).selectors)
      for (const name of selectedNames(selector, seriesNames)) {
        const labels = labelsOf(name)
        if (!labels) continue // reported by the test above
        const values = contractMetric(contract, name)?.values ?? {}
        for (const m of selector.matchers) {
          if (m.label === '__name__') continue
          assert.ok(labels.has(m.label), `${where}: ${name} has no label ${m.label}`)
          const allowed = values[m.label]
          if (allowed && m.op === '=')
            assert.ok(allowed.includes(m.value), `${where}: ${m.label}="${m.value}"`)
          if (allowed && m.op === '=~') {
            const re = new RegExp(`^(?:${m.value})$`)
            assert.ok(
              allowed.some((v) => re.test(v)),
              `${where}: ${m.label}=~"${m.value}" matches no value`,
            )
          }
        }
      }
})

test('grouping labels and legends name labels that exist', () => {
  for (const { where, expr, legend } of expressions) {
    const facts = analyzePromql(expr)
    const known = new Set([...everyLabel, ...facts.createdLabels])
    for (const label of facts.groupingLabels) assert.ok(known.has(label), `${where}: unknown label ${label}`)
    for (const label of legendLabels(legend))
      assert.ok(known.has(label), `${where}: legend uses unknown ${label}`)
  }
})

test('the recording rules the dashboards use exist, and every recording rule is used by a dashboard', () => {
  const used = new Set(
    dashboardExpressions.flatMap((e) => analyzePromql(e.expr).selectors.map((s) => s.metric ?? '')),
  )
  for (const name of recorded.keys())
    assert.ok(used.has(name), `${name} is recorded but no dashboard uses it`)
})

// ---------------------------------------------------------------- alert rules

test('every alert has for:, a severity, a summary and a description', () => {
  const alerts = rules.filter((r) => r.alert !== undefined)
  assert.ok(alerts.length >= 10)
  for (const rule of alerts) {
    assert.match(rule.for ?? '', /^\d+[smh]$/, `${rule.alert ?? ''}: for`)
    assert.ok(
      ['warning', 'critical'].includes(rule.labels?.['severity'] ?? ''),
      `${rule.alert ?? ''}: severity`,
    )
    assert.ok((rule.annotations?.['summary'] ?? '').length > 0, `${rule.alert ?? ''}: summary`)
    assert.ok((rule.annotations?.['description'] ?? '').length > 0, `${rule.alert ?? ''}: description`)
  }
})

test('the promtool tests cover every alert firing and not firing, and every recording rule', () => {
  const suite = parseYaml(readFileSync(RULES_TEST_FILE, 'utf8')) as {
    tests: {
      alert_rule_test?: { alertname: string; exp_alerts?: { exp_labels?: Record<string, string> }[] }[]
      promql_expr_test?: { expr: string }[]
    }[]
  }
  const cases = suite.tests.flatMap((t) => t.alert_rule_test ?? [])
  for (const rule of rules.filter((r) => r.alert !== undefined)) {
    const mine = cases.filter((c) => c.alertname === rule.alert)
    assert.ok(
      mine.some((c) => (c.exp_alerts ?? []).length === 0),
      `${rule.alert ?? ''}: no case where it stays quiet`,
    )
    assert.ok(
      mine.some((c) =>
        (c.exp_alerts ?? []).some((a) => a.exp_labels?.['severity'] === rule.labels?.['severity']),
      ),
      `${rule.alert ?? ''} (${rule.labels?.['severity'] ?? ''}): no case where it fires`,
    )
  }
  const tested = suite.tests.flatMap((t) => (t.promql_expr_test ?? []).map((e) => e.expr)).join('\n')
  for (const name of recorded.keys()) assert.ok(tested.includes(name), `${name}: no promql_expr_test`)
})
