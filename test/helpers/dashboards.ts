// Reads the Grafana dashboards, the rule file and the metric contract, and takes PromQL apart (lezer-promql).
// Used by test/unit/dashboards.test.ts, and by end-to-end tests that run every panel query against a real
// Prometheus: `allPanelQueries()` lists them, `renderExpr()` fills in the dashboard variables.
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parser } from '@prometheus-io/lezer-promql'
import { parse as parseYaml } from 'yaml'

export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
export const DASHBOARD_DIR = join(ROOT, 'grafana', 'dashboards')
export const RULES_FILE = join(ROOT, 'grafana', 'alerts', 'mailprobe.rules.yml')
export const RULES_TEST_FILE = join(ROOT, 'grafana', 'alerts', 'mailprobe.rules.test.yml')
export const CONTRACT_FILE = join(ROOT, 'grafana', 'metrics.json')

// ---------------------------------------------------------------- dashboards

/** The parts of a dashboard JSON these helpers walk; the full model is checked by the test. */
export interface DashboardJson {
  uid: string
  title: string
  panels: PanelJson[]
  templating: { list: VariableJson[] }
  [key: string]: unknown
}

export interface PanelJson {
  id: number
  type: string
  title: string
  gridPos: { h: number; w: number; x: number; y: number }
  datasource?: { type?: string; uid?: string }
  targets?: TargetJson[]
  panels?: PanelJson[]
  fieldConfig?: {
    defaults: { links?: { title: string; url: string }[]; [key: string]: unknown }
    overrides: { matcher: { id: string; options?: unknown }; properties: { id: string; value?: unknown }[] }[]
  }
  [key: string]: unknown
}

export interface TargetJson {
  refId: string
  expr: string
  datasource?: { type?: string; uid?: string }
  legendFormat?: string
  instant?: boolean
  range?: boolean
  format?: string
  [key: string]: unknown
}

export interface VariableJson {
  name: string
  type: string
  query?: string | { query?: string; [key: string]: unknown }
  datasource?: { type?: string; uid?: string } | null
  [key: string]: unknown
}

export interface DashboardFile {
  /** File name, e.g. mailprobe-overview.json. */
  file: string
  path: string
  dashboard: DashboardJson
}

export function loadDashboards(): DashboardFile[] {
  return readdirSync(DASHBOARD_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => {
      const path = join(DASHBOARD_DIR, file)
      return { file, path, dashboard: JSON.parse(readFileSync(path, 'utf8')) as DashboardJson }
    })
}

/** Every panel, rows and the panels of collapsed rows included. */
export function allPanels(dashboard: DashboardJson): PanelJson[] {
  return dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])])
}

export interface PanelQuery {
  dashboard: string
  panelId: number
  panelTitle: string
  panelType: string
  refId: string
  /** The expression as stored, with Grafana variables ($job, $__range ...). */
  expr: string
  legendFormat: string | undefined
  instant: boolean
  format: string | undefined
}

export function panelQueries(dashboard: DashboardJson): PanelQuery[] {
  return allPanels(dashboard).flatMap((panel) =>
    (panel.targets ?? []).map((t) => ({
      dashboard: dashboard.uid,
      panelId: panel.id,
      panelTitle: panel.title,
      panelType: panel.type,
      refId: t.refId,
      expr: t.expr,
      legendFormat: t.legendFormat,
      instant: t.instant === true,
      format: t.format,
    })),
  )
}

/** All panel queries of all dashboards: what an end-to-end test runs against a real Prometheus. */
export function allPanelQueries(): PanelQuery[] {
  return loadDashboards().flatMap(({ dashboard }) => panelQueries(dashboard))
}

export interface VariableQuery {
  dashboard: string
  name: string
  query: string
  /** The PromQL inside label_values(...) / query_result(...), or the whole query. */
  expr: string
}

export function variableQueries(dashboard: DashboardJson): VariableQuery[] {
  return dashboard.templating.list
    .filter((v) => v.type === 'query')
    .map((v) => {
      const query = typeof v.query === 'string' ? v.query : (v.query?.query ?? '')
      return { dashboard: dashboard.uid, name: v.name, query, expr: variableExpr(query) }
    })
}

/** label_values(selector, label) -> selector; query_result(expr) -> expr; anything else unchanged. */
export function variableExpr(query: string): string {
  const labelValues = /^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$/s.exec(query)
  if (labelValues?.[1] !== undefined) return labelValues[1]
  const result = /^\s*query_result\((.*)\)\s*$/s.exec(query)
  if (result?.[1] !== undefined) return result[1]
  return query
}

/** Values for the dashboard variables that make every query valid PromQL (and match the rule tests' series). */
export const SAMPLE_VARIABLES: Readonly<Record<string, string>> = {
  datasource: 'prometheus',
  job: 'mailprobe',
  instance: 'mail.example.org:587',
  module: 'smtp_submission',
}

/** Grafana's built-in interval variables, as Prometheus durations. */
const BUILTIN_DURATIONS: Readonly<Record<string, string>> = {
  __rate_interval: '4m',
  __interval: '1m',
  __range: '6h',
}

/**
 * Fills in Grafana variables: $var, ${var}, ${var:format}, [[var]], and $__rate_interval, $__interval,
 * $__range (and their _s / _ms forms). Unknown variables are left as they are, so that a test notices them.
 */
export function renderExpr(
  expr: string,
  values: Readonly<Record<string, string>> = SAMPLE_VARIABLES,
): string {
  const lookup = (name: string): string | undefined => {
    const builtin = BUILTIN_DURATIONS[name]
    if (builtin !== undefined) return builtin
    const seconds = /^(__rate_interval|__interval|__range)_(s|ms)$/.exec(name)
    if (seconds?.[1] !== undefined) {
      const base = durationSeconds(BUILTIN_DURATIONS[seconds[1]] ?? '0s')
      return String(seconds[2] === 's' ? base : base * 1000)
    }
    return values[name]
  }
  return expr.replace(
    /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}|\[\[([A-Za-z_][A-Za-z0-9_]*)\]\]|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (whole, braced?: string, bracketed?: string, plain?: string) =>
      lookup(braced ?? bracketed ?? plain ?? '') ?? whole,
  )
}

/** The variable names an expression uses (built-ins included). */
export function variablesUsed(expr: string): string[] {
  const names = new Set<string>()
  for (const m of expr.matchAll(
    /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}|\[\[([A-Za-z_][A-Za-z0-9_]*)\]\]|\$([A-Za-z_][A-Za-z0-9_]*)/g,
  )) {
    const name = m[1] ?? m[2] ?? m[3]
    if (name !== undefined) names.add(name)
  }
  return [...names]
}

function durationSeconds(text: string): number {
  const m = /^(\d+)([smhd])$/.exec(text)
  if (!m) return 0
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[m[2] as 's' | 'm' | 'h' | 'd']
  return Number(m[1]) * unit
}

// ---------------------------------------------------------------- contract

export interface ContractMetric {
  source: 'probe' | 'exporter' | 'prometheus'
  type: 'gauge' | 'counter' | 'histogram'
  labels: string[]
  values?: Record<string, string[]>
}

export interface Contract {
  targetLabels: string[]
  metrics: Record<string, ContractMetric>
}

export function loadContract(): Contract {
  return JSON.parse(readFileSync(CONTRACT_FILE, 'utf8')) as Contract
}

/** The contract entry a series name belongs to: histograms also answer for _bucket, _sum and _count. */
export function contractMetric(contract: Contract, name: string): ContractMetric | undefined {
  const direct = contract.metrics[name]
  if (direct) return direct
  const m = /^(.*)_(bucket|sum|count)$/.exec(name)
  const histogram = m?.[1] === undefined ? undefined : contract.metrics[m[1]]
  return histogram?.type === 'histogram' ? histogram : undefined
}

/** Every series name the contract allows, histogram series included. */
export function contractSeriesNames(contract: Contract): string[] {
  return Object.entries(contract.metrics).flatMap(([name, m]) =>
    m.type === 'histogram' ? [name, `${name}_bucket`, `${name}_sum`, `${name}_count`] : [name],
  )
}

// ---------------------------------------------------------------- rules

export interface Rule {
  group: string
  record?: string
  alert?: string
  expr: string
  for?: string
  labels?: Record<string, string>
  annotations?: Record<string, string>
}

export function loadRules(file = RULES_FILE): Rule[] {
  const doc = parseYaml(readFileSync(file, 'utf8')) as {
    groups: { name: string; rules: Omit<Rule, 'group'>[] }[]
  }
  return doc.groups.flatMap((g) => g.rules.map((r) => ({ group: g.name, ...r })))
}

/** Series names the recording rules create, with the labels each adds. */
export function recordedSeries(rules: Rule[] = loadRules()): Map<string, Set<string>> {
  const recorded = new Map<string, Set<string>>()
  for (const rule of rules) {
    if (rule.record === undefined) continue
    const labels = recorded.get(rule.record) ?? new Set<string>()
    for (const label of Object.keys(rule.labels ?? {})) labels.add(label)
    recorded.set(rule.record, labels)
  }
  return recorded
}

// ---------------------------------------------------------------- PromQL

export interface Matcher {
  label: string
  op: '=' | '!=' | '=~' | '!~'
  value: string
}

export interface Selector {
  /** The metric name before the braces, if any. */
  metric: string | undefined
  matchers: Matcher[]
  text: string
}

export interface PromqlFacts {
  selectors: Selector[]
  /** Labels named in by/without/on/ignoring/group_left/group_right. */
  groupingLabels: string[]
  /** Labels created by label_replace / label_join. */
  createdLabels: string[]
  /** Syntax errors found by the lezer grammar (position and the text around it). */
  errors: string[]
}

type SyntaxNode = NonNullable<ReturnType<ReturnType<typeof parser.parse>['topNode']['getChild']>>

function unquote(literal: string): string {
  if (literal.startsWith('`')) return literal.slice(1, -1)
  return JSON.parse(
    literal.startsWith("'") ? `"${literal.slice(1, -1).replace(/"/g, '\\"')}"` : literal,
  ) as string
}

/** Takes an expression apart: selectors with their matchers, grouping labels, labels made by functions. */
export function analyzePromql(expr: string): PromqlFacts {
  const tree = parser.parse(expr)
  const text = (node: { from: number; to: number }) => expr.slice(node.from, node.to)
  const facts: PromqlFacts = { selectors: [], groupingLabels: [], createdLabels: [], errors: [] }
  tree.iterate({
    enter(ref) {
      if (ref.type.isError) {
        facts.errors.push(`at ${ref.from}: "${expr.slice(Math.max(0, ref.from - 20), ref.from + 20)}"`)
        return
      }
      const node: SyntaxNode = ref.node
      switch (ref.name) {
        case 'VectorSelector': {
          const name = node.getChild('Identifier')
          const matchers: Matcher[] = []
          const list = node.getChild('LabelMatchers')
          for (const m of list
            ? [...list.getChildren('UnquotedLabelMatcher'), ...list.getChildren('QuotedLabelMatcher')]
            : []) {
            const label = m.getChild('LabelName') ?? m.getChild('QuotedLabelName')
            const op = m.getChild('MatchOp')
            const value = m.getChild('StringLiteral')
            if (!label || !op || !value) continue
            const labelText = label.name === 'QuotedLabelName' ? unquote(text(label)) : text(label)
            // A quoted name alone ({"metric"}) is a metric name in Prometheus 3; not used here.
            matchers.push({ label: labelText, op: text(op) as Matcher['op'], value: unquote(text(value)) })
          }
          facts.selectors.push({ metric: name ? text(name) : undefined, matchers, text: text(node) })
          break
        }
        case 'GroupingLabels':
          for (const label of node.getChildren('LabelName')) facts.groupingLabels.push(text(label))
          break
        case 'FunctionCall': {
          const fn = node.getChild('FunctionIdentifier')
          if (fn && (text(fn) === 'label_replace' || text(fn) === 'label_join')) {
            const args = node.getChild('FunctionCallBody')?.getChildren('StringLiteral') ?? []
            const target = args[0]
            if (target) facts.createdLabels.push(unquote(text(target)))
          }
          break
        }
      }
    },
  })
  return facts
}

/** The contract series a selector can select: its metric name, or the names its __name__ matchers allow. */
export function selectedNames(selector: Selector, names: readonly string[]): string[] {
  if (selector.metric !== undefined) return [selector.metric]
  return names.filter((name) =>
    selector.matchers
      .filter((m) => m.label === '__name__')
      .every((m) => {
        const re = new RegExp(`^(?:${m.value})$`)
        switch (m.op) {
          case '=':
            return name === m.value
          case '!=':
            return name !== m.value
          case '=~':
            return re.test(name)
          case '!~':
            return !re.test(name)
        }
      }),
  )
}

/** {{label}} references in a legend format. */
export function legendLabels(legend: string | undefined): string[] {
  if (legend === undefined || legend === '__auto') return []
  return [...legend.matchAll(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g)].map((m) => m[1] ?? '')
}
