// The exporter's own metrics (global registry, served on /metrics).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { REJECT_REASONS } from './rejections.ts'

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
  const registers = [registry]
  new Gauge({
    name: 'mailprobe_exporter_build_info',
    help: 'A metric with a constant 1 value labeled by version and the Node.js version it runs on',
    labelNames: ['version', 'nodeversion'],
    registers,
  }).set({ version, nodeversion: process.version }, 1)
  return {
    registry,
    probes: new Counter({
      name: 'mailprobe_exporter_probes_total',
      help: 'Probes run, by module and result (success or failure)',
      labelNames: ['module', 'result'],
      registers,
    }),
    probeDuration: new Histogram({
      name: 'mailprobe_exporter_probe_duration_seconds',
      help: 'Wall time of probes by module',
      labelNames: ['module'],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    }),
    moduleUnknown: new Counter({
      name: 'mailprobe_exporter_module_unknown_total',
      help: 'Probe requests for a module that is not in the config',
      registers,
    }),
    rejected: rejectedCounter(registers),
    probesInFlight: new Gauge({
      name: 'mailprobe_exporter_probes_in_flight',
      help: 'Probes running now (not counting those waiting for a slot under --probe.max-concurrent)',
      registers,
    }),
    reloadSuccess: new Gauge({
      name: 'mailprobe_exporter_config_last_reload_successful',
      help: 'Whether the last configuration reload attempt was successful',
      registers,
    }),
    reloadTimestamp: new Gauge({
      name: 'mailprobe_exporter_config_last_reload_success_timestamp_seconds',
      help: 'Timestamp of the last successful configuration reload',
      registers,
    }),
  }
}

/** Every reason is exported from the start, at 0, so that rate() and alerts see the first refusal. */
function rejectedCounter(registers: Registry[]): Counter<'reason'> {
  const counter = new Counter({
    name: 'mailprobe_exporter_probe_requests_rejected_total',
    help: '/probe requests refused before probing (400, 403, 405, 429, 503), by reason',
    labelNames: ['reason'],
    registers,
  })
  for (const reason of REJECT_REASONS) counter.inc({ reason }, 0)
  return counter
}

/** Round-trip state files found invalid, moved aside and started afresh (src/probers/roundtrip/state.ts counts them). */
export function roundtripStateResetCounter(registry: Registry): Counter {
  return new Counter({
    name: 'mailprobe_exporter_roundtrip_state_reset_total',
    help: 'Round-trip state files found invalid (empty, not JSON, wrong schema or version), moved aside and started afresh',
    registers: [registry],
  })
}
