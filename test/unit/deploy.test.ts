// Deployment files: Prometheus, Alertmanager and compose configs validate with their own tools, mounted
// paths exist, the image runs as non-root, and the exporter, scrape and Kubernetes configs agree.
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, posix, relative } from 'node:path'
import { test } from 'node:test'
import { parse as parseYaml, parseAllDocuments } from 'yaml'
import { defaultPort, loadConfig, parseConfig, type Config } from '../../src/config.ts'
import { parseTarget, targetAllowed } from '../../src/targets.ts'
import { ROOT } from '../helpers/dashboards.ts'
import { entrypointNodeFlags } from '../helpers/entrypoint.ts'

const at = (...parts: string[]) => join(ROOT, ...parts)
const read = (...parts: string[]) => readFileSync(at(...parts), 'utf8')

function run(command: string, args: string[], env: Record<string, string> = {}) {
  const result = spawnSync(command, args, { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...env } })
  if (result.error) throw result.error
  return { status: result.status, output: `${result.stdout}${result.stderr}` }
}

// ---------------------------------------------------------------- the tools' own checks

test('promtool accepts deploy/prometheus/prometheus.yml, rule files included', () => {
  const { status, output } = run('promtool', ['check', 'config', 'deploy/prometheus/prometheus.yml'])
  assert.equal(status, 0, output)
  assert.match(output, /SUCCESS: 1 rule files found/)
})

test('amtool accepts deploy/alertmanager/alertmanager.yml', () => {
  const { status, output } = run('amtool', ['check-config', 'deploy/alertmanager/alertmanager.yml'])
  assert.equal(status, 0, output)
})

test('docker-compose accepts docker-compose.yml', () => {
  const { status, output } = run('docker-compose', ['-f', 'docker-compose.yml', 'config', '-q'])
  assert.equal(status, 0, output)
})

test('config/compose.yml passes the exporter config check', () => {
  const { status, output } = run('npx', [
    'tsx',
    'src/main.ts',
    '--config.check',
    '--config.file=config/compose.yml',
  ])
  assert.equal(status, 0, output)
  assert.match(output, /config\/compose\.yml: ok/)
})

// ---------------------------------------------------------------- docker-compose.yml

interface ComposeService {
  build?: string | { context: string; dockerfile?: string }
  image?: string
  command?: string[]
  environment?: Record<string, string>
  volumes?: string[]
  ports?: string[]
}
const compose = parseYaml(read('docker-compose.yml')) as {
  services: Record<string, ComposeService>
  volumes?: Record<string, unknown>
}
const services = compose.services

/** Host-path bind mounts of a service as [host path in the repo, container path]. */
function binds(service: ComposeService): [string, string][] {
  return (service.volumes ?? [])
    .map((v) => v.split(':'))
    .filter(([source]) => source?.startsWith('.') === true)
    .map(([source = '', target = '']) => [at(source), target])
}

/** The repository file a container path of a service shows, through its bind mounts. */
function hostPath(service: ComposeService, containerPath: string): string | undefined {
  for (const [host, target] of binds(service)) {
    if (containerPath === target) return host
    if (containerPath.startsWith(`${target}/`)) return join(host, containerPath.slice(target.length + 1))
  }
  return undefined
}

function flag(service: ComposeService, name: string): string | undefined {
  return service.command?.find((c) => c.startsWith(`--${name}=`))?.slice(name.length + 3)
}

test('compose: every bind-mounted path and the build context exist in the repository', () => {
  for (const [name, service] of Object.entries(services)) {
    for (const [host] of binds(service))
      assert.ok(existsSync(host), `${name}: ${relative(ROOT, host)} is missing`)
    for (const volume of service.volumes ?? []) {
      const source = volume.split(':')[0] ?? ''
      if (!source.startsWith('.') && !source.startsWith('/'))
        assert.ok(
          compose.volumes && source in compose.volumes,
          `${name}: named volume ${source} is not declared`,
        )
    }
  }
  assert.equal(services['mailprobe']?.build, '.')
  assert.ok(existsSync(at('Dockerfile')))
})

test('compose: each service reads its config from the files of this repository', () => {
  const exporter = services['mailprobe']!
  const exporterConfig = hostPath(exporter, flag(exporter, 'config.file') ?? '')
  assert.equal(exporterConfig && relative(ROOT, exporterConfig), 'config/compose.yml')

  const prometheus = services['prometheus']!
  const promConfig = flag(prometheus, 'config.file') ?? ''
  assert.equal(relative(ROOT, hostPath(prometheus, promConfig) ?? ''), 'deploy/prometheus/prometheus.yml')
  // rule_files are relative to the config file: they must resolve inside the container too.
  const promYaml = parseYaml(read('deploy/prometheus/prometheus.yml')) as { rule_files: string[] }
  for (const rules of promYaml.rule_files) {
    const inContainer = posix.join(posix.dirname(promConfig), rules)
    const file = hostPath(prometheus, inContainer)
    assert.ok(file && existsSync(file), `${rules} -> ${inContainer} is not mounted`)
    assert.equal(relative(ROOT, file), 'grafana/alerts/mailprobe.rules.yml')
  }

  const alertmanager = services['alertmanager']!
  const amConfig = hostPath(alertmanager, flag(alertmanager, 'config.file') ?? '')
  assert.equal(amConfig && relative(ROOT, amConfig), 'deploy/alertmanager/alertmanager.yml')

  const grafana = services['grafana']!
  const provider = parseYaml(read('grafana/provisioning/dashboards/mailprobe.yml')) as {
    providers: { options: { path: string } }[]
  }
  const dashboards = hostPath(grafana, provider.providers[0]!.options.path)
  assert.equal(dashboards && relative(ROOT, dashboards), 'grafana/dashboards')
  for (const dir of ['datasources', 'dashboards'])
    assert.equal(
      relative(ROOT, hostPath(grafana, `/etc/grafana/provisioning/${dir}`) ?? ''),
      `grafana/provisioning/${dir}`,
    )
  const home = hostPath(grafana, grafana.environment?.['GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH'] ?? '')
  assert.ok(home && existsSync(home), 'home dashboard')
})

test('compose: the Grafana datasources point at the Prometheus and Alertmanager services', () => {
  const provisioning = parseYaml(read('grafana/provisioning/datasources/mailprobe.yml')) as {
    datasources: { type: string; url: string; isDefault?: boolean }[]
  }
  const prometheus = provisioning.datasources.find((d) => d.type === 'prometheus')
  assert.equal(prometheus?.url, 'http://prometheus:9090')
  assert.equal(prometheus.isDefault, true)
  assert.ok(services['prometheus']?.ports?.some((p) => p.endsWith(':9090')))
  assert.equal(
    provisioning.datasources.find((d) => d.type === 'alertmanager')?.url,
    'http://alertmanager:9093',
  )
})

// ---------------------------------------------------------------- Dockerfile

test('Dockerfile: builds with npm ci && npm run build, and runs dist/src/main.js as a non-root user', () => {
  const lines = read('Dockerfile')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
  const stages = lines.reduce<string[][]>((acc, line) => {
    if (/^FROM\s/i.test(line)) acc.push([])
    acc.at(-1)?.push(line)
    return acc
  }, [])
  assert.ok(stages.length >= 2, 'multi-stage')
  const build = stages[0]!.join('\n')
  assert.match(build, /^FROM node:24\S* AS build/m)
  assert.match(build, /RUN npm ci/)
  assert.match(build, /RUN npm run build/)

  const final = stages.at(-1)!
  assert.match(final[0]!, /^FROM node:24[-\w.]*slim/)
  const users = final.filter((l) => /^USER\s/i.test(l)).map((l) => l.split(/\s+/)[1] ?? '')
  assert.ok(users.length > 0, 'the final stage sets USER')
  const user = users.at(-1)!.split(':')[0]!
  assert.ok(!['root', '0'].includes(user), `USER ${user}`)
  assert.match(user, /^\d+$/, 'a numeric uid, which Kubernetes runAsNonRoot can verify')
  assert.ok(final.some((l) => /^EXPOSE\s+9786\b/.test(l)))
  assert.ok(final.includes('ENTRYPOINT ["node", "--max-semi-space-size=2", "dist/src/main.js"]'))
  assert.ok(final.includes('CMD ["--config.file=/etc/mailprobe/config.yml"]'))

  // npm start runs what the image runs, with the same Node flags (the benchmark measures those too)
  const start = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts['start']
  assert.ok(
    start?.includes(`node ${entrypointNodeFlags(read('Dockerfile')).join(' ')} dist/src/main.js`),
    `npm start: ${start}`,
  )

  const ignored = read('.dockerignore').split('\n')
  for (const entry of ['node_modules', 'dist', '.git'])
    assert.ok(ignored.includes(entry), `.dockerignore: ${entry}`)
})

function dockerUid(): number {
  const user = /^USER\s+(\d+)/m.exec(read('Dockerfile'))?.[1]
  return Number(user)
}

// ---------------------------------------------------------------- the scrape config and the exporter config

interface ScrapeConfig {
  job_name: string
  metrics_path?: string
  params?: Record<string, string[]>
  static_configs: { targets: string[]; labels?: Record<string, string> }[]
  relabel_configs?: {
    source_labels?: string[]
    target_label?: string
    regex?: string
    replacement?: string
  }[]
}
const prometheusYaml = parseYaml(read('deploy/prometheus/prometheus.yml')) as {
  scrape_configs: ScrapeConfig[]
  alerting: { alertmanagers: { static_configs: { targets: string[] }[] }[] }
}

/** The job's default module: the relabel rule that fills in an empty __param_module. */
function defaultModule(job: ScrapeConfig): string | undefined {
  return job.relabel_configs?.find(
    (r) =>
      r.source_labels?.join() === '__param_module' && r.target_label === '__param_module' && r.regex === '',
  )?.replacement
}

/** Module, target and the address the scrape goes to, for each target of the /probe jobs. */
function probeTargets(job: ScrapeConfig) {
  const exporter = job.relabel_configs?.find((r) => r.target_label === '__address__')?.replacement
  return job.static_configs.flatMap((sc) =>
    sc.targets.map((target) => ({
      job: job.job_name,
      target,
      module: sc.labels?.['__param_module'] ?? defaultModule(job),
      exporter,
    })),
  )
}

function checkModulesAndTargets(
  config: Config,
  probes: { job: string; target: string; module?: string | undefined }[],
) {
  for (const { job, target, module } of probes) {
    assert.ok(module !== undefined, `${job} ${target}: no module`)
    const m = config.modules[module]
    assert.ok(m, `${job} ${target}: module ${module} is not in the exporter config`)
    const parsed = parseTarget(target, defaultPort(m))
    assert.ok(typeof parsed !== 'string', parsed as string)
    if (m.allowed_targets)
      assert.ok(targetAllowed(parsed, m.allowed_targets), `${target} is not in allowed_targets of ${module}`)
  }
}

test('prometheus.yml: the probe jobs follow the blackbox relabelling and reach the compose exporter', () => {
  const jobs = prometheusYaml.scrape_configs
  const probeJobs = jobs.filter((j) => j.metrics_path === '/probe')
  assert.deepEqual(
    probeJobs.map((j) => j.job_name),
    ['mailprobe', 'mailprobe_roundtrip'],
  )
  assert.equal(defaultModule(jobs.find((j) => j.job_name === 'mailprobe')!), 'smtp_submission')
  for (const job of probeJobs) {
    // The rules select the probe jobs with job=~"mailprobe.*".
    assert.match(job.job_name, /^mailprobe/)
    const relabel = job.relabel_configs ?? []
    const copies = relabel
      .filter((r) => r.source_labels)
      .map((r) => [r.source_labels?.join(','), r.target_label])
    // Prometheus 2 lets a job's params override the targets' __param_module labels
    // (prometheus/prometheus#11029): the default module is set by relabelling instead.
    assert.equal(job.params, undefined, `${job.job_name}: params`)
    assert.deepEqual(copies, [
      ['__param_module', '__param_module'],
      ['__address__', '__param_target'],
      ['__param_target', 'instance'],
      ['__param_module', 'module'],
    ])
    for (const { exporter } of probeTargets(job)) assert.equal(exporter, 'mailprobe:9786')
  }
  // The exporter's own job has the name the rules and the exporter dashboard use.
  assert.deepEqual(jobs.find((j) => j.job_name === 'mailprobe_exporter')?.static_configs, [
    { targets: ['mailprobe:9786'] },
  ])
  assert.ok(services['mailprobe']?.ports?.includes('9786:9786'))
  assert.deepEqual(prometheusYaml.alerting.alertmanagers[0]?.static_configs[0]?.targets, [
    'alertmanager:9093',
  ])
  assert.ok(services['alertmanager'])
})

test('prometheus.yml: every probed module is in config/compose.yml and allows its target', () => {
  const config = loadConfig(at('config', 'compose.yml'))
  const probes = prometheusYaml.scrape_configs
    .filter((j) => j.metrics_path === '/probe')
    .flatMap(probeTargets)
  checkModulesAndTargets(config, probes)
  // and every module of the compose config is probed
  assert.deepEqual(new Set(probes.map((p) => p.module)), new Set(Object.keys(config.modules)))
})

// ---------------------------------------------------------------- Kubernetes

interface K8sObject {
  apiVersion: string
  kind: string
  metadata: { name: string; namespace?: string; labels?: Record<string, string> }
  spec?: Record<string, unknown>
  data?: Record<string, string>
  stringData?: Record<string, string>
  [key: string]: unknown
}

const K8S_DIR = at('deploy', 'kubernetes')
const k8sFiles = readdirSync(K8S_DIR).filter((f) => f.endsWith('.yaml'))
const k8s: K8sObject[] = k8sFiles
  .filter((f) => f !== 'kustomization.yaml')
  .flatMap((f) =>
    parseAllDocuments(readFileSync(join(K8S_DIR, f), 'utf8')).map((doc) => {
      assert.deepEqual(doc.errors, [], f)
      return doc.toJS() as K8sObject
    }),
  )
type WithSpec<T> = K8sObject & { spec: T }
/** The only object of a kind. */
function one(kind: string): K8sObject {
  const found = k8s.filter((o) => o.kind === kind)
  assert.equal(found.length, 1, kind)
  return found[0]!
}
const matches = (selector: Record<string, string>, labels: Record<string, string> | undefined) =>
  Object.entries(selector).every(([k, v]) => labels?.[k] === v)

interface PodSpec {
  securityContext: { runAsNonRoot?: boolean; runAsUser?: number }
  containers: {
    args: string[]
    ports: { name: string; containerPort: number }[]
    env?: { name: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[]
    volumeMounts: { name: string; mountPath: string }[]
  }[]
  volumes: { name: string; configMap?: { name: string }; persistentVolumeClaim?: { claimName: string } }[]
}
interface DeploymentSpec {
  selector: { matchLabels: Record<string, string> }
  template: { metadata: { labels: Record<string, string> }; spec: PodSpec }
}
interface ServiceSpec {
  selector: Record<string, string>
  ports: { name: string; port: number; targetPort: string | number }[]
}
interface ProbeSpec {
  jobName: string
  prober: { url: string; path: string }
  module: string
  targets: {
    staticConfig: {
      static: string[]
      relabelingConfigs?: { sourceLabels?: string[]; targetLabel?: string }[]
    }
  }
}

test('kubernetes: every manifest parses, and kustomization.yaml lists them all', () => {
  assert.ok(k8s.length >= 7)
  for (const o of k8s) {
    assert.ok(o.apiVersion && o.kind && o.metadata.name, JSON.stringify(o.metadata))
    assert.equal(o.metadata.namespace, 'monitoring', `${o.kind}/${o.metadata.name}`)
  }
  const kustomization = parseYaml(readFileSync(join(K8S_DIR, 'kustomization.yaml'), 'utf8')) as {
    resources: string[]
  }
  assert.deepEqual(
    [...kustomization.resources].sort(),
    k8sFiles.filter((f) => f !== 'kustomization.yaml').sort(),
  )
})

test('kubernetes: the Deployment runs the image as the Dockerfile user, with its config and state mounted', () => {
  const deployment = one('Deployment') as WithSpec<DeploymentSpec>
  const { selector, template } = deployment.spec
  assert.ok(matches(selector.matchLabels, template.metadata.labels))
  const pod = template.spec
  assert.equal(pod.securityContext.runAsNonRoot, true)
  assert.equal(pod.securityContext.runAsUser, dockerUid())
  const container = pod.containers[0]!
  assert.ok(container.args.includes('--config.file=/etc/mailprobe/config.yml'))
  const mounts = Object.fromEntries(container.volumeMounts.map((m) => [m.mountPath, m.name]))
  const volumes = Object.fromEntries(pod.volumes.map((v) => [v.name, v]))
  const configMap = one('ConfigMap')
  assert.equal(volumes[mounts['/etc/mailprobe'] ?? '']?.configMap?.name, configMap.metadata.name)
  assert.ok(configMap.data?.['config.yml'])
  assert.equal(
    volumes[mounts['/var/lib/mailprobe'] ?? '']?.persistentVolumeClaim?.claimName,
    one('PersistentVolumeClaim').metadata.name,
  )
  const secret = one('Secret')
  for (const env of container.env ?? []) {
    const ref = env.valueFrom?.secretKeyRef
    if (!ref) continue
    assert.equal(ref.name, secret.metadata.name, env.name)
    assert.ok(ref.key in (secret.stringData ?? secret.data ?? {}), `${env.name}: key ${ref.key}`)
  }
})

test('kubernetes: the ConfigMap config passes the exporter config check', (t) => {
  const deployment = one('Deployment') as WithSpec<DeploymentSpec>
  const env = Object.fromEntries(
    (deployment.spec.template.spec.containers[0]!.env ?? []).map((e) => [e.name, 'not-the-real-password']),
  )
  const dir = mkdtempSync(join(tmpdir(), 'mailprobe-k8s-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'config.yml')
  writeFileSync(file, one('ConfigMap').data?.['config.yml'] ?? '')
  const { status, output } = run(
    'npx',
    ['tsx', 'src/main.ts', '--config.check', `--config.file=${file}`],
    env,
  )
  assert.equal(status, 0, output)
})

test('kubernetes: the Service selects the pod and the Probes point at the Service', () => {
  const deployment = one('Deployment') as WithSpec<DeploymentSpec>
  const service = one('Service') as WithSpec<ServiceSpec>
  const pod = deployment.spec.template
  assert.ok(matches(service.spec.selector, pod.metadata.labels))
  const containerPorts = pod.spec.containers[0]!.ports
  const port = service.spec.ports[0]!
  assert.ok(containerPorts.some((p) => p.name === port.targetPort || p.containerPort === port.targetPort))

  const monitor = one('ServiceMonitor') as WithSpec<{
    selector: { matchLabels: Record<string, string> }
    endpoints: { port: string; path: string; relabelings?: { targetLabel: string; replacement: string }[] }[]
  }>
  assert.ok(matches(monitor.spec.selector.matchLabels, service.metadata.labels))
  const endpoint = monitor.spec.endpoints[0]!
  assert.equal(endpoint.port, port.name)
  assert.equal(endpoint.path, '/metrics')
  assert.ok(
    endpoint.relabelings?.some((r) => r.targetLabel === 'job' && r.replacement === 'mailprobe_exporter'),
  )

  const probes = k8s.filter((o) => o.kind === 'Probe') as WithSpec<ProbeSpec>[]
  assert.ok(probes.length >= 1)
  const serviceHost = `${service.metadata.name}.${service.metadata.namespace ?? ''}.svc`
  for (const probe of probes) {
    const [host, probePort] = probe.spec.prober.url.split(':')
    assert.ok(
      host === serviceHost || host === `${serviceHost}.cluster.local`,
      `${probe.metadata.name}: ${host ?? ''}`,
    )
    assert.equal(Number(probePort), port.port)
    assert.equal(probe.spec.prober.path, '/probe')
    assert.match(probe.spec.jobName, /^mailprobe/)
    assert.ok(
      probe.spec.targets.staticConfig.relabelingConfigs?.some(
        (r) => r.sourceLabels?.join() === '__param_module' && r.targetLabel === 'module',
      ),
      `${probe.metadata.name}: module label`,
    )
  }
  // Modules and targets need no secrets: the *_env keys become literal placeholders.
  const configText = (one('ConfigMap').data?.['config.yml'] ?? '').replace(
    /(\w+)_env: \S+/g,
    '$1: placeholder',
  )
  const config = parseConfig(configText, 'configmap.yaml')
  checkModulesAndTargets(
    config,
    probes.flatMap((p) =>
      p.spec.targets.staticConfig.static.map((target) => ({
        job: p.spec.jobName,
        target,
        module: p.spec.module,
      })),
    ),
  )
})

test('the scrape configs quoted in deploy/README.md are valid Prometheus configuration', (t) => {
  const blocks = [...read('deploy', 'README.md').matchAll(/```yaml\n(scrape_configs:\n[\s\S]*?)```/g)].map(
    (m) => m[1]!,
  )
  assert.ok(blocks.length > 0)
  const dir = mkdtempSync(join(tmpdir(), 'mailprobe-readme-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  blocks.forEach((block, i) => {
    const file = join(dir, `readme-${i}.yml`)
    writeFileSync(file, block)
    const { status, output } = run('promtool', ['check', 'config', file])
    assert.equal(status, 0, `block ${i}: ${output}`)
    assert.match(block, /hashmod/)
  })
})
