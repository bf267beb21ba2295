// The exporter's own metrics (global registry, served on /metrics).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { defineMetric, type MetricDef } from './metrics.ts'
import { REJECT_REASONS } from './rejections.ts'

const BUILD_INFO = defineMetric({
  name: 'mailprobe_exporter_build_info',
  help: 'A metric with a constant 1 value labeled by version and the Node.js version it runs on',
  type: 'gauge',
  labels: ['version', 'nodeversion'],
})
const PROBES_TOTAL = defineMetric({
  name: 'mailprobe_exporter_probes_total',
  help: 'Probes run, by module and result (success or failure)',
  type: 'counter',
  labels: ['module', 'result'],
  values: { result: ['success', 'failure'] },
})
const PROBE_DURATION_SECONDS = defineMetric({
  name: 'mailprobe_exporter_probe_duration_seconds',
  help: 'Wall time of probes by module',
  type: 'histogram',
  labels: ['module'],
})
const MODULE_UNKNOWN_TOTAL = defineMetric({
  name: 'mailprobe_exporter_module_unknown_total',
  help: 'Probe requests for a module that is not in the config',
  type: 'counter',
  labels: [],
})
const PROBES_IN_FLIGHT = defineMetric({
  name: 'mailprobe_exporter_probes_in_flight',
  help: 'Probes running now (not counting those waiting for a slot under --probe.max-concurrent)',
  type: 'gauge',
  labels: [],
})
const CONFIG_LAST_RELOAD_SUCCESSFUL = defineMetric({
  name: 'mailprobe_exporter_config_last_reload_successful',
  help: 'Whether the last configuration reload attempt was successful',
  type: 'gauge',
  labels: [],
})
const CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS = defineMetric({
  name: 'mailprobe_exporter_config_last_reload_success_timestamp_seconds',
  help: 'Timestamp of the last successful configuration reload',
  type: 'gauge',
  labels: [],
})
const PROBE_REQUESTS_REJECTED_TOTAL = defineMetric({
  name: 'mailprobe_exporter_probe_requests_rejected_total',
  help: '/probe requests refused before probing (400, 403, 405, 429, 503), by reason',
  type: 'counter',
  labels: ['reason'],
  values: { reason: REJECT_REASONS },
})
const ROUNDTRIP_STATE_RESET_TOTAL = defineMetric({
  name: 'mailprobe_exporter_roundtrip_state_reset_total',
  help: 'Round-trip state files found invalid (empty, not JSON, wrong schema or version), moved aside and started afresh',
  type: 'counter',
  labels: [],
})

/** The exporter's own metrics (/metrics), besides prom-client's process and Node.js ones. */
export const EXPORTER_METRICS = [
  BUILD_INFO,
  PROBES_TOTAL,
  PROBE_DURATION_SECONDS,
  MODULE_UNKNOWN_TOTAL,
  PROBES_IN_FLIGHT,
  CONFIG_LAST_RELOAD_SUCCESSFUL,
  CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
  PROBE_REQUESTS_REJECTED_TOTAL,
  ROUNDTRIP_STATE_RESET_TOTAL,
]

/** prom-client's options for a definition, registered in `registry`. */
const metricOptions = (m: MetricDef, registry: Registry) => ({
  name: m.name,
  help: m.help,
  labelNames: [...m.labels],
  registers: [registry],
})

export interface ExporterMetrics {
  registry: Registry
  probes: Counter<'module' | 'result'>
  probeDuration: Histogram<'module'>
  moduleUnknown: Counter
  rejected: Counter<'reason'>
  probesInFlight: Gauge
  reloadSuccess: Gauge
  reloadTimestamp: Gauge
}

export function createExporterMetrics(version: string): ExporterMetrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  new Gauge(metricOptions(BUILD_INFO, registry)).set({ version, nodeversion: process.version }, 1)
  return {
    registry,
    probes: new Counter(metricOptions(PROBES_TOTAL, registry)),
    probeDuration: new Histogram({
      ...metricOptions(PROBE_DURATION_SECONDS, registry),
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    }),
    moduleUnknown: new Counter(metricOptions(MODULE_UNKNOWN_TOTAL, registry)),
    rejected: rejectedCounter(registry),
    probesInFlight: new Gauge(metricOptions(PROBES_IN_FLIGHT, registry)),
    reloadSuccess: new Gauge(metricOptions(CONFIG_LAST_RELOAD_SUCCESSFUL, registry)),
    reloadTimestamp: new Gauge(metricOptions(CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS, registry)),
  }
}

/** Every reason is exported from the start, at 0, so that rate() and alerts see the first refusal. */
function rejectedCounter(registry: Registry): Counter<'reason'> {
  const counter = new Counter(metricOptions(PROBE_REQUESTS_REJECTED_TOTAL, registry))
  for (const reason of REJECT_REASONS) counter.inc({ reason }, 0)
  return counter
}

/** Round-trip state files found invalid, moved aside and started afresh (src/probers/roundtrip/state.ts counts them). */
export function roundtripStateResetCounter(registry: Registry): Counter {
  return new Counter(metricOptions(ROUNDTRIP_STATE_RESET_TOTAL, registry))
}
