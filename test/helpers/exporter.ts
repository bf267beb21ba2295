// The exporter's HTTP app on an ephemeral loopback port, in-process, with a config given as YAML.
import type { AddressInfo } from 'node:net'
import type { TestContext } from 'node:test'
import { parseConfig, type Config } from '../../src/config.ts'
import { createExporterMetrics } from '../../src/exporter-metrics.ts'
import { History } from '../../src/history.ts'
import type { IntervalGate, ProbeSlots } from '../../src/limits.ts'
import { silentLogger } from '../../src/logger.ts'
import { ProberStates } from '../../src/probers/index.ts'
import { createApp } from '../../src/server.ts'

/** Starts the app (closed after the test): its base URL, its state, a config switch and a GET helper. */
export async function startExporter(
  t: TestContext,
  yaml: string,
  limits: { slots?: ProbeSlots; gate?: IntervalGate } = {},
) {
  let config: Config = parseConfig(yaml, 'test.yml')
  const state = {
    ...limits,
    version: '9.9.9',
    config: () => config,
    reload: () => Promise.resolve(undefined as string | undefined),
    logger: silentLogger,
    history: new History(),
    metrics: createExporterMetrics('9.9.9'),
    timeoutOffset: 0.5,
    states: new ProberStates(),
  }
  const server = createApp(state).listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  t.after(() => server.close())
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    base,
    state,
    setConfig: (c: Config) => (config = c),
    get: (path: string, headers: Record<string, string> = {}) => fetch(base + path, { headers }),
  }
}
