// End to end with a real Prometheus: the exporter probes the real Postfix + Dovecot, Prometheus scrapes it
// with the documented scrape config (deploy/prometheus/prometheus.yml) and evaluates the real rules; then
// every dashboard query, dashboard variable and rule expression must be valid PromQL and return data
// (or, for the few listed below, return nothing, as they must in a healthy setup). Last, Dovecot is
// stopped and MailProbeFailing must go pending for the IMAP and POP3 probes.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { promisify } from 'node:util'
import { ImapFlow } from 'imapflow'
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'
import {
  ROOT,
  RULES_FILE,
  loadDashboards,
  loadRules,
  panelQueries,
  renderExpr,
  variableQueries,
  type DashboardJson,
} from '../helpers/dashboards.ts'
import {
  PrometheusApi,
  freePort,
  hasData,
  startExporter,
  startPrometheus,
  waitFor,
  type ActiveTarget,
  type Daemon,
} from '../helpers/prometheus.ts'
import { mailStack } from '../helpers/stack.ts'

const stack = mailStack()
const run = promisify(execFile)
const loopback = (port: number) => `127.0.0.1:${port}`

/*
 * Expressions that must return NOTHING here: the alerts that would misfire if they returned anything in a
 * healthy setup. They are evaluated like the others (so they must be valid), and their emptiness is asserted.
 * Keys are the `where` names the summary prints.
 */
const EXPECTED_EMPTY: Readonly<Record<string, string>> = {
  'rule MailProbeScrapeFailing (warning)':
    'the exporter answers every /probe request: up is 1 for all targets',
  'rule MailProbeDeferred (warning)': 'Postfix accepts every test mail at once: no greylisting 4xx',
  'rule MailProbeNearTimeout (warning)': 'probes of a loopback server use a small part of their timeout',
  'rule MailRoundtripSlow (warning)': 'delivery on loopback takes well under a second, not > 60s',
  'rule MailCertificateExpiring (warning)': "the stack's server certificate is valid for 825 days",
  'rule MailCertificateExpiring (critical)': "the stack's server certificate is valid for 825 days",
  'rule MailStarttlsMissing (critical)': 'Postfix and Dovecot offer STARTTLS/STLS on every cleartext port',
  'rule MailTlsVersionDeprecated (warning)': 'the stack negotiates TLS 1.3',
  'rule MailprobeExporterConfigReloadFailed (warning)': 'the config loaded',
  'rule MailprobeExporterDown (critical)': 'the exporter is up',
}

/** The only module whose probes fail while the stack is healthy: its mails go to the void address. */
const FAILING_MODULE = 'roundtrip_lost'

/*
 * The alerts that must return data here, and exactly for which modules. With EXPECTED_EMPTY this covers
 * every alert rule: a new rule must be added to one of the two.
 */
const EXPECTED_ALERTS: Readonly<Record<string, { modules: string[]; why: string }>> = {
  'rule MailProbeFailing (critical)': {
    modules: [FAILING_MODULE],
    why: 'its mails go to the void address, so every probe after the first finds one lost',
  },
  'rule MailRoundtripLost (critical)': { modules: [FAILING_MODULE], why: 'as above' },
  'rule MailRoundtripJunk (warning)': {
    modules: ['roundtrip_junk'],
    why: 'its mails carry X-Spam-Flag: YES, which the Sieve rule of the stack files into Junk',
  },
  'rule MailPlaintextAuthOffered (warning)': {
    modules: [
      'imap_login',
      'pop3_login',
      'roundtrip_imap',
      'roundtrip_junk',
      FAILING_MODULE,
      'roundtrip_pop3_deferred',
    ],
    why:
      "the stack's Dovecot allows login before STARTTLS (disable_plaintext_auth = no): the IMAP and POP3 " +
      'probes and the receive legs of the round trips see it; Postfix offers AUTH only after TLS',
  },
}

// ---------------------------------------------------------------- the exporter's config

/** Marks the mails the port-25 module sends to alice, so that exactly those are deleted afterwards. */
const MARK_HEADER = 'X-Mailprobe-Prometheus-Test'
const MARK = `run-${process.pid}-${Date.now()}`

function exporterConfig(stateDir: string): string {
  const tls_config = { ca_file: stack.ca }
  const [user, password] = stack.users.probe
  const auth = { username: user, password }
  const allowed_targets = ['127.0.0.1']
  const roundtrip = (r: {
    receive?: 'imap' | 'pop3'
    to?: string
    headers?: Record<string, string>
    deferred?: { state: string; lost_after?: string }
  }) => {
    const protocol = r.receive ?? 'imap'
    return {
      prober: 'roundtrip',
      timeout: '10s',
      allowed_targets,
      roundtrip: {
        mode: r.deferred ? 'deferred' : 'sync',
        smtp: {
          tls: 'starttls',
          tls_config,
          auth,
          send: { from: user, to: r.to ?? user, ...(r.headers ? { headers: r.headers } : {}) },
        },
        receive: {
          protocol,
          target: loopback(stack.ports[protocol]),
          [protocol]: { tls: protocol === 'imap' ? 'starttls' : 'stls', tls_config, auth },
        },
        cleanup_reserve: '500ms',
        ...(r.deferred
          ? {
              state_file: join(stateDir, `${r.deferred.state}.json`),
              ...(r.deferred.lost_after === undefined ? {} : { lost_after: r.deferred.lost_after }),
            }
          : {}),
      },
    }
  }
  // The documented jobs' default modules (smtp_submission, roundtrip_imap) and documented module names
  // where there is one; the others are named for what they do.
  const modules = {
    smtp_submission: {
      prober: 'smtp',
      timeout: '10s',
      allowed_targets,
      smtp: { tls: 'starttls', tls_config, auth },
    },
    // Submission in the clear offers no AUTH (smtpd_tls_auth_only): the probe reconnects with STARTTLS.
    smtp_submission_retry: {
      prober: 'smtp',
      timeout: '10s',
      allowed_targets,
      smtp: { tls: 'none', tls_config, auth, retry_with_starttls: true },
    },
    smtp_mx_send: {
      prober: 'smtp',
      timeout: '10s',
      allowed_targets,
      smtp: {
        tls: 'starttls',
        tls_config,
        send: { from: user, to: stack.users.alice[0], headers: { [MARK_HEADER]: MARK } },
      },
    },
    smtps_certificate: { prober: 'smtp', timeout: '10s', smtp: { tls: 'implicit', tls_config } },
    imap_login: {
      prober: 'imap',
      timeout: '10s',
      allowed_targets,
      imap: { tls: 'starttls', tls_config, auth },
    },
    pop3_login: { prober: 'pop3', timeout: '10s', allowed_targets, pop3: { tls: 'stls', tls_config, auth } },
    roundtrip_imap: roundtrip({}),
    roundtrip_pop3_deferred: roundtrip({ receive: 'pop3', deferred: { state: 'pop3-deferred' } }),
    // Postfix accepts mail for the void address and discards it: each scrape finds the previous mail lost.
    [FAILING_MODULE]: roundtrip({ to: stack.voidAddress, deferred: { state: 'lost', lost_after: '2s' } }),
    // The stack's Sieve rule files mail with this header into Junk.
    roundtrip_junk: roundtrip({ headers: { 'X-Spam-Flag': 'YES' } }),
  }
  // Prometheus here scrapes every 1-3 s, more often than the min_interval defaults (1 s, 10 s) allow.
  for (const module of Object.values(modules)) Object.assign(module, { min_interval: '0s' })
  return stringifyYaml({ modules })
}

// ---------------------------------------------------------------- the documented scrape config, re-targeted

interface StaticConfig {
  targets: string[]
  labels?: Record<string, string>
}
interface ScrapeConfig {
  job_name: string
  scrape_interval?: string
  scrape_timeout?: string
  params?: { module?: string[] }
  static_configs: StaticConfig[]
  relabel_configs?: Record<string, unknown>[]
}
interface PrometheusConfig {
  global: { scrape_interval: string; scrape_timeout: string; evaluation_interval: string }
  rule_files: string[]
  alerting?: unknown
  scrape_configs: ScrapeConfig[]
}

const DOCUMENTED = join(ROOT, 'deploy', 'prometheus', 'prometheus.yml')
/** Probe jobs: 1s. Jobs the documentation gives a slower interval of their own (round trips): 3s. */
const INTERVAL = '1s'
const SLOW_INTERVAL = '3s'

/** What the probe jobs probe here, as [target, module]. */
const PROBES: Readonly<Record<string, readonly (readonly [string, string])[]>> = {
  mailprobe: [
    [loopback(stack.ports.submission), 'smtp_submission'],
    [loopback(stack.ports.submission), 'smtp_submission_retry'],
    [loopback(stack.ports.smtp), 'smtp_mx_send'],
    [loopback(stack.ports.smtps), 'smtps_certificate'],
    [loopback(stack.ports.imap), 'imap_login'],
    [loopback(stack.ports.pop3), 'pop3_login'],
  ],
  mailprobe_roundtrip: [
    [loopback(stack.ports.submission), 'roundtrip_imap'],
    [loopback(stack.ports.submission), 'roundtrip_pop3_deferred'],
    [loopback(stack.ports.submission), FAILING_MODULE],
    [loopback(stack.ports.submission), 'roundtrip_junk'],
  ],
}

/** A job's default module: its `params`, or a relabel rule that fills in an empty __param_module. */
function defaultModule(job: ScrapeConfig): string | undefined {
  const rule = job.relabel_configs?.find((r) => r['target_label'] === '__param_module' && r['regex'] === '')
  return (
    job.params?.module?.[0] ?? (typeof rule?.['replacement'] === 'string' ? rule['replacement'] : undefined)
  )
}

interface Probe {
  job: string
  target: string
  module: string
}

/**
 * deploy/prometheus/prometheus.yml with only addresses, targets, intervals and paths changed: relabelling,
 * params, metrics paths and job names stay as documented, so the test proves the documented config. A
 * target gets a __param_module label as documented, except the job's default module where the documented
 * config has targets without one.
 */
function scrapeConfig(exporter: string, prometheus: string, rulesFile: string) {
  const config = parseYaml(readFileSync(DOCUMENTED, 'utf8')) as PrometheusConfig
  const exporterJob = config.scrape_configs.find((j) => j.job_name === 'mailprobe_exporter')
  const documentedExporter = exporterJob?.static_configs[0]?.targets[0]
  assert.ok(documentedExporter, 'the documented config has a mailprobe_exporter job with a target')
  assert.deepEqual(
    config.scrape_configs.map((j) => j.job_name).sort(),
    [...Object.keys(PROBES), 'mailprobe_exporter', 'prometheus'].sort(),
    'the documented jobs changed: update this test',
  )

  config.global = { scrape_interval: INTERVAL, scrape_timeout: INTERVAL, evaluation_interval: INTERVAL }
  config.rule_files = [rulesFile]
  delete config.alerting // no Alertmanager here; ALERTS and /api/v1/alerts show what would be sent
  const probes: Probe[] = []
  for (const job of config.scrape_configs) {
    const interval = job.scrape_interval === undefined ? INTERVAL : SLOW_INTERVAL
    if (job.scrape_interval !== undefined) job.scrape_interval = interval
    if (job.scrape_timeout !== undefined) job.scrape_timeout = interval
    for (const rule of job.relabel_configs ?? [])
      if (rule['replacement'] === documentedExporter) rule['replacement'] = exporter
    const mine = PROBES[job.job_name]
    if (mine === undefined) {
      job.static_configs = [{ targets: [job.job_name === 'prometheus' ? prometheus : exporter] }]
      continue
    }
    const fallback = job.static_configs.some((s) => s.labels?.['__param_module'] === undefined)
      ? defaultModule(job)
      : undefined
    if (fallback !== undefined)
      assert.ok(
        mine.some(([, m]) => m === fallback),
        `${job.job_name}: the documented default module ${fallback} is not probed here: update this test`,
      )
    job.static_configs = mine.map(([target, module]) =>
      module === fallback ? { targets: [target] } : { targets: [target], labels: { __param_module: module } },
    )
    probes.push(...mine.map(([target, module]) => ({ job: job.job_name, target, module })))
  }
  return { config, probes }
}

/** The real rule file, with only the groups' own evaluation intervals shortened (1m recording rules). */
function rulesCopy(): string {
  const rules = parseYaml(readFileSync(RULES_FILE, 'utf8')) as { groups: { interval?: string }[] }
  for (const group of rules.groups) if (group.interval !== undefined) group.interval = INTERVAL
  return stringifyYaml(rules)
}

// ---------------------------------------------------------------- expressions and dashboard variables

interface Check {
  /** e.g. `mailprobe-target.json "SMTP phases, last probe" F`, or `rule MailProbeFailing (critical)`. */
  where: string
  /** One rendering per combination of dashboard variable values. */
  variants: string[]
  expectEmpty: boolean
}

/** Grafana's regex escaping of a multi-value / All variable value (Prometheus data source). */
const regexEscape = (v: string) => v.replace(/[.*+?^${}()|[\]\\]/g, '\\\\$&')

/**
 * Every combination of variable values a user can pick, resolved the way Grafana does (label_values through
 * Prometheus' label values API, variables in order). Variables with "All" take All (allValue, or every value
 * as a regex alternation); single-value variables take each value in turn.
 */
async function variableCombos(
  api: PrometheusApi,
  dashboard: DashboardJson,
  file: string,
  empty: string[],
): Promise<Record<string, string>[]> {
  let combos: Record<string, string>[] = [{}]
  for (const v of dashboard.templating.list) {
    if (v.type === 'datasource') {
      combos = combos.map((c) => ({ ...c, [v.name]: 'prometheus' }))
      continue
    }
    assert.equal(v.type, 'query', `${file} variable ${v.name}: only query variables are handled`)
    const query = variableQueries({ ...dashboard, templating: { list: [v] } })[0]
    const label = /^\s*label_values\(.*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$/s.exec(query?.query ?? '')?.[1]
    assert.ok(query && label, `${file} variable ${v.name}: label_values(selector, label) expected`)
    const next: Record<string, string>[] = []
    for (const combo of combos) {
      const values = await api.labelValues(label, renderExpr(query.expr, combo))
      if (values.length === 0) empty.push(`${file} variable ${v.name} with ${JSON.stringify(combo)}`)
      if (v['includeAll'] === true) {
        const all =
          typeof v['allValue'] === 'string' ? v['allValue'] : `(${values.map(regexEscape).join('|')})`
        next.push({ ...combo, [v.name]: all })
      } else {
        const format = v['multi'] === true ? regexEscape : (s: string) => s
        for (const value of values) next.push({ ...combo, [v.name]: format(value) })
      }
    }
    combos = next
  }
  return combos
}

async function dashboardChecks(api: PrometheusApi, emptyVariables: string[]): Promise<Check[]> {
  const checks: Check[] = []
  for (const { file, dashboard } of loadDashboards()) {
    const combos = await variableCombos(api, dashboard, file, emptyVariables)
    assert.ok(combos.length > 0, `${file}: no combination of variable values`)
    for (const q of panelQueries(dashboard)) {
      const where = `${file} "${q.panelTitle}" ${q.refId}`
      const variants = [...new Set(combos.map((c) => renderExpr(q.expr, c)))]
      for (const v of variants) assert.doesNotMatch(v, /\$|\[\[/, `${where}: unrendered variable in ${v}`)
      checks.push({ where, variants, expectEmpty: where in EXPECTED_EMPTY })
    }
  }
  return checks
}

function ruleChecks(): Check[] {
  return loadRules().map((r) => {
    const where =
      r.alert !== undefined
        ? `rule ${r.alert} (${r.labels?.['severity'] ?? '?'})`
        : `rule ${r.record ?? '?'}${r.labels?.['quantile'] === undefined ? '' : ` quantile ${r.labels['quantile']}`}`
    return { where, variants: [r.expr], expectEmpty: where in EXPECTED_EMPTY }
  })
}

interface Result {
  check: Check
  /** How many variants returned data. */
  data: number
  errors: string[]
  /** For rules: the modules the result selects. */
  modules: string[]
}

/** Runs every variant of every check once, 8 queries at a time. */
async function evaluate(api: PrometheusApi, checks: Check[]): Promise<Result[]> {
  const jobs = checks.map((check) => async (): Promise<Result> => {
    const result: Result = { check, data: 0, errors: [], modules: [] }
    for (const expr of check.variants) {
      const r = await api.query(expr)
      if (!r.ok) result.errors.push(`${check.where}: invalid: ${r.error}\n    ${expr}`)
      else if (hasData(r)) {
        result.data++
        if (r.resultType === 'vector') result.modules.push(...r.result.map((x) => x.metric['module'] ?? ''))
      }
    }
    result.modules = [...new Set(result.modules)].sort()
    return result
  })
  const results: Result[] = []
  const workers = Array.from({ length: 8 }, async () => {
    for (let job = jobs.shift(); job; job = jobs.shift()) results.push(await job())
  })
  await Promise.all(workers)
  return results
}

// ---------------------------------------------------------------- Dovecot

const dovecotPidFile = join(stack.dir, 'dovecot', 'run', 'master.pid')

/** The running Dovecot master's pid, checked against /proc (a stale pid file must not make us kill another process). */
function dovecotPid(): number | undefined {
  if (!existsSync(dovecotPidFile)) return undefined
  const pid = Number(readFileSync(dovecotPidFile, 'utf8').trim())
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'dovecot' ? pid : undefined
  } catch {
    return undefined
  }
}

/** Waits for the stopped master to be gone, then lets the project's script start it and wait for its ports. */
async function restartDovecot(oldPid: number): Promise<void> {
  const deadline = Date.now() + 10_000
  while (existsSync(`/proc/${oldPid}`) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
  if (existsSync(`/proc/${oldPid}`)) process.kill(oldPid, 'SIGKILL') // as mailstack.sh stop does after 10 s
  await run('bash', [join(ROOT, 'scripts', 'mailstack.sh'), 'start', stack.dir], { timeout: 60_000 })
  // Mail Postfix accepted during the outage (other users of this stack too) is deferred for minutes:
  // deliver it now.
  await run('postqueue', ['-c', join(stack.dir, 'postfix', 'conf'), '-f'], { timeout: 10_000 }).catch(
    () => undefined,
  )
}

/** Deletes the mails the port-25 module sent to alice (only those: they carry this run's mark). */
async function deleteMarkedMail(): Promise<number> {
  const client = new ImapFlow({
    host: '127.0.0.1',
    port: stack.ports.imaps,
    secure: true,
    tls: { ca: readFileSync(stack.ca), servername: 'mail.test' },
    auth: { user: stack.users.alice[0], pass: stack.users.alice[1] },
    logger: false,
  })
  client.on('error', () => undefined)
  await client.connect()
  try {
    await client.mailboxOpen('INBOX')
    const uids = await client.search({ header: { [MARK_HEADER]: MARK } }, { uid: true })
    if (!uids || uids.length === 0) return 0
    await client.messageDelete(uids, { uid: true })
    return uids.length
  } finally {
    await client.logout().catch(() => undefined)
  }
}

// ---------------------------------------------------------------- the test

test(
  'prometheus (real): the documented scrape config, every dashboard query and rule, and MailProbeFailing when Dovecot stops',
  { timeout: 170_000 },
  async (t) => {
    const started = Date.now()
    const dir = mkdtempSync(join(tmpdir(), 'mailprobe-prometheus-'))
    const running: { exporter?: Daemon; prometheus?: Daemon; stoppedDovecot?: number } = {}
    // One hook, in order: nothing probes any more before the marked mails are deleted, and Dovecot is back
    // even when the test failed or timed out while it was down.
    t.after(async () => {
      await running.prometheus?.stop()
      await running.exporter?.stop()
      const stopped = running.stoppedDovecot
      if (stopped !== undefined && dovecotPid() === undefined) await restartDovecot(stopped)
      t.diagnostic(`deleted ${await deleteMarkedMail()} test mails sent to alice`)
      rmSync(dir, { recursive: true, force: true })
      t.diagnostic(`${((Date.now() - started) / 1000).toFixed(1)}s in all`)
    })

    const exporterFile = join(dir, 'mailprobe.yml')
    writeFileSync(exporterFile, exporterConfig(dir))
    // Budget: 1s scrape timeout - 0.25s = 0.75s for a login probe, 2.75s for a round trip.
    const exp = await startExporter(exporterFile, ['--timeout-offset=0.25'])
    running.exporter = exp
    const exporterAddress = exp.url.replace('http://', '')

    const promPort = await freePort()
    const rulesFile = join(dir, 'mailprobe.rules.yml')
    writeFileSync(rulesFile, rulesCopy())
    const { config, probes } = scrapeConfig(exporterAddress, loopback(promPort), rulesFile)
    const promFile = join(dir, 'prometheus.yml')
    writeFileSync(promFile, stringifyYaml(config))
    const prom = await startPrometheus(promFile, join(dir, 'data'), promPort)
    running.prometheus = prom
    const api = new PrometheusApi(prom.url)
    const logs = () => `${exp.output()}\n${prom.output()}`

    // First the relabelling, with a clear message: every target is probed with its own module, `instance`
    // is the mail server and `module` the module (Prometheus lists the targets about 5s after its start).
    const scraped = (x: ActiveTarget): Probe & { module_label: string; instance: string; url: URL } => {
      const url = new URL(x.scrapeUrl)
      return {
        job: x.labels['job'] ?? '',
        target: url.searchParams.get('target') ?? '',
        module: url.searchParams.get('module') ?? '',
        module_label: x.labels['module'] ?? '',
        instance: x.labels['instance'] ?? '',
        url,
      }
    }
    const probeTargets = async () => (await api.targets()).map(scraped).filter((x) => x.job in PROBES)
    const same = (a: Probe, b: Probe) => a.job === b.job && a.target === b.target && a.module === b.module
    // Prometheus applies the static targets of all jobs at once: when every probe job has targets, they are all there.
    const listed = await waitFor('Prometheus to list the probe targets', 20_000, async () => {
      const active = await probeTargets()
      return Object.keys(PROBES).every((job) => active.some((x) => x.job === job)) ? active : undefined
    })
    assert.ok(
      probes.every((p) => listed.some((x) => same(p, x))),
      `Prometheus does not probe every target with its module.\nExpected (job target module):\n  ` +
        probes.map((p) => `${p.job} ${p.target} ${p.module}`).join('\n  ') +
        `\nPrometheus scrapes:\n  ` +
        listed.map((x) => `${x.job} ${x.url.toString()} (module label ${x.module_label})`).join('\n  ') +
        `\nNote: Prometheus 2.x lets a job's params.module override a target's __param_module label ` +
        `(prometheus/prometheus#11029), so a job default must not be set with params.`,
    )
    const active = await probeTargets()
    assert.equal(active.length, probes.length, 'no other probe targets')
    for (const x of active) {
      assert.equal(x.url.host, exporterAddress)
      assert.equal(x.url.pathname, '/probe')
      assert.equal(x.instance, x.target, 'instance is the probed server')
      assert.equal(x.module_label, x.module, 'the module label is the probed module')
    }

    // Every target scraped successfully, three times at least (the round trips every 3s).
    const expectedTargets = probes.length + 2
    await waitFor('every target to be up and scraped 3 times', 45_000, async () => {
      const targets = await api.targets()
      const down = targets.filter((x) => x.health !== 'up')
      if (targets.length !== expectedTargets || down.length > 0) return undefined
      const counts = await api.vector('count_over_time(up[5m])')
      return counts.length === expectedTargets && counts.every((c) => Number(c.value?.[1]) >= 3)
        ? true
        : undefined
    }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${logs()}`)
    })

    await t.test(
      'every dashboard query, dashboard variable and rule is valid and has data (or is empty as it must be)',
      async () => {
        const rules = ruleChecks()
        for (const key of [...Object.keys(EXPECTED_EMPTY), ...Object.keys(EXPECTED_ALERTS)])
          assert.ok(
            rules.some((c) => c.where === key),
            `the expectations name ${key}, which is no rule any more`,
          )
        for (const rule of rules.filter((c) => !c.where.startsWith('rule instance_')))
          assert.ok(
            rule.where in EXPECTED_EMPTY !== rule.where in EXPECTED_ALERTS,
            `${rule.where}: say in EXPECTED_EMPTY or EXPECTED_ALERTS (not both) what it must return here`,
          )
        const emptyVariables: string[] = []
        const checks = [...(await dashboardChecks(api, emptyVariables)), ...rules]
        assert.deepEqual(emptyVariables, [], 'dashboard variables without values')

        // Some data takes a few scrapes (a lost mail, the first deferred mail found, recording rules): ask
        // again, within a bound, for what has had no data yet. Then one last round over everything: every
        // variant valid, and the expressions of EXPECTED_EMPTY empty.
        const began = Date.now()
        const dataChecks = checks.filter((c) => !c.expectEmpty)
        const found = new Set<Check>()
        const problems = new Set<string>()
        let queries = 0
        await waitFor(
          'every expression that should have data to have it',
          30_000,
          async () => {
            const pending = dataChecks.filter((c) => !found.has(c))
            queries += pending.reduce((n, c) => n + c.variants.length, 0)
            for (const r of await evaluate(api, pending)) {
              for (const e of r.errors) problems.add(e)
              if (r.data > 0) found.add(r.check)
            }
            return found.size === dataChecks.length ? true : undefined
          },
          1000,
        ).catch(() => undefined)
        const final = await evaluate(api, checks)
        queries += checks.reduce((n, c) => n + c.variants.length, 0)
        for (const r of final) {
          for (const e of r.errors) problems.add(e)
          const alert = EXPECTED_ALERTS[r.check.where]
          if (alert !== undefined && r.modules.join() !== [...alert.modules].sort().join())
            problems.add(
              `${r.check.where}: selects ${r.modules.join(', ') || 'nothing'}, expected ` +
                `${[...alert.modules].sort().join(', ')} (${alert.why})`,
            )
          if (r.check.expectEmpty && r.data > 0)
            problems.add(
              `${r.check.where}: has data for ${r.modules.join(', ')}, but must be empty: ${EXPECTED_EMPTY[r.check.where] ?? ''}`,
            )
        }
        const invalid = new Set(final.filter((r) => r.errors.length > 0).map((r) => r.check))
        for (const c of dataChecks)
          if (!found.has(c) && !invalid.has(c))
            problems.add(
              `${c.where}: no data for any of ${c.variants.length} variable combination(s), e.g.\n    ${c.variants[0] ?? ''}`,
            )
        assert.deepEqual([...problems], [], `${problems.size} problems`)

        // Rule evaluation itself: Prometheus reports no rule errors.
        const groups = (
          (await (await fetch(`${prom.url}/api/v1/rules`)).json()) as {
            data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] }
          }
        ).data.groups
        const unhealthy = groups.flatMap((g) => g.rules).filter((r) => r.health !== 'ok')
        assert.deepEqual(unhealthy, [], 'rules with evaluation errors')

        // The event alerts (for: 0m) fire at the first evaluation that sees the event.
        await waitFor('MailRoundtripLost and MailRoundtripJunk to fire', 5000, async () => {
          const firing = (await api.alerts()).filter((a) => a.state === 'firing')
          const fires = (alertname: string, module: string) =>
            firing.some((a) => a.labels['alertname'] === alertname && a.labels['module'] === module)
          return fires('MailRoundtripLost', FAILING_MODULE) && fires('MailRoundtripJunk', 'roundtrip_junk')
            ? true
            : undefined
        })

        const panels = checks.filter((c) => !c.where.startsWith('rule ')).length
        const variants = checks.reduce((n, c) => n + c.variants.length, 0)
        t.diagnostic(
          `${checks.length} expressions (${panels} panel queries in ${variants - rules.length} variable ` +
            `combinations, ${rules.length} rules): ${found.size} with data, ` +
            `${checks.length - dataChecks.length} empty as they must be; ${queries} queries in ` +
            `${((Date.now() - began) / 1000).toFixed(1)}s`,
        )
        for (const r of final.filter((x) => x.check.where in EXPECTED_ALERTS))
          t.diagnostic(`${r.check.where} selects ${r.modules.join(', ') || '(no module label)'}`)
      },
    )

    await t.test(
      'MailProbeFailing goes pending for the IMAP and POP3 probes when Dovecot stops',
      async () => {
        const pid = dovecotPid()
        assert.ok(pid, `Dovecot is not running (${dovecotPidFile})`)
        const outage = Date.now()
        running.stoppedDovecot = pid
        process.kill(pid, 'SIGTERM')
        let alerts
        try {
          alerts = await waitFor('MailProbeFailing for imap_login and pop3_login', 30_000, async () => {
            const active = (await api.alerts()).filter(
              (a) => a.labels['alertname'] === 'MailProbeFailing' && ['pending', 'firing'].includes(a.state),
            )
            const modules = new Set(active.map((a) => a.labels['module']))
            return modules.has('imap_login') && modules.has('pop3_login') ? active : undefined
          })
        } finally {
          await restartDovecot(pid)
          delete running.stoppedDovecot
          t.diagnostic(`Dovecot was down for ${((Date.now() - outage) / 1000).toFixed(1)}s`)
        }
        const series = await api.vector(
          'ALERTS{alertname="MailProbeFailing", module=~"imap_login|pop3_login"}',
        )
        assert.deepEqual([...new Set(series.map((s) => s.metric['module']))].sort(), [
          'imap_login',
          'pop3_login',
        ])
        for (const alert of alerts.filter((a) =>
          ['imap_login', 'pop3_login'].includes(a.labels['module'] ?? ''),
        )) {
          // The description's template runs a query for the failed phase: it must have found one.
          assert.match(
            alert.annotations['description'] ?? '',
            /The last failure was in phase \w+\./,
            JSON.stringify(alert),
          )
          assert.equal(
            alert.labels['instance'],
            loopback(stack.ports[alert.labels['module'] === 'imap_login' ? 'imap' : 'pop3']),
          )
        }
        for (const alert of await api.alerts())
          for (const text of Object.values(alert.annotations))
            assert.doesNotMatch(text, /error expanding template/, JSON.stringify(alert))
      },
    )
  },
)
