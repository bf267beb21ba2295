// Service discovery: /sd?module=M&target=mx:DOMAIN lists a domain's mail exchangers in Prometheus'
// http_sd_configs format, so that Prometheus can scrape one /probe per host (or per address) and keep
// one series each. The lookup is the one an mx: probe does (src/mx.ts), within the module's timeout.
import { Registry } from 'prom-client'
import { chooseTarget } from './handler.ts'
import type { Logger } from './logger.ts'
import { findCause } from './errors.ts'
import { mailExchangerAddresses, NullMxError } from './mx.ts'
import { ProbePhases } from './phases.ts'
import { mxPlanOf, type Module } from './probers/index.ts'
import { reject, type Rejection } from './rejections.ts'
import { formatTarget, isMxTarget, targetAllowed } from './targets.ts'

/** One http_sd target group: https://prometheus.io/docs/prometheus/latest/http_sd/ */
export interface TargetGroup {
  targets: string[]
  labels: Record<string, string>
}

export type SdAnswer =
  | { status: 200; contentType: string; body: string; groups: TargetGroup[] }
  | { status: 502; contentType: string; body: string }
  | Rejection

const JSON_TYPE = 'application/json; charset=utf-8'

/**
 * The target groups of a domain's mail exchangers: `host:port` each (mx.addresses: preferred), or
 * each address with `__param_hostname` set to its host's name, so that the probe checks the
 * certificate against that name (mx.addresses: all). With allowed_targets, only what /probe would
 * accept is listed: host names, or addresses. A null MX lists nothing; a failed lookup is a 502,
 * on which Prometheus keeps the targets it had.
 */
export async function discoverMailExchangers(
  moduleName: string,
  module: Module,
  target: string | undefined,
  logger: Logger,
): Promise<SdAnswer> {
  const chosen = chooseTarget({ moduleName, module, target })
  if ('status' in chosen) return chosen
  if (!isMxTarget(chosen))
    return reject(400, 'invalid_target', 'service discovery lists mail exchangers: give target=mx:DOMAIN')
  const plan = mxPlanOf(module)
  const perAddress = plan.settings.addresses === 'all'
  const controller = new AbortController()
  const signal = controller.signal
  const timer = setTimeout(() => controller.abort(), Math.round(module.timeout * 1000))
  const registry = new Registry()
  let addresses
  try {
    addresses = await mailExchangerAddresses(chosen, plan, {
      signal,
      registry,
      logger,
      phases: new ProbePhases(registry),
    })
  } catch (err) {
    if (findCause(err, NullMxError)) return answer([])
    const message = err instanceof Error ? err.message : String(err)
    logger.warn('service discovery failed', { module: moduleName, target: target ?? '', err: message })
    return { status: 502, contentType: 'text/plain; charset=utf-8', body: `${message}\n` }
  } finally {
    clearTimeout(timer)
  }
  const rules = plan.allowedTargets
  const groups: TargetGroup[] = []
  const seen = new Set<string>()
  for (const a of addresses) {
    if (a.skip?.phase === 'resolve') continue
    const host = perAddress ? a.ip : a.mx
    const where = formatTarget({ host, port: chosen.port })
    if (seen.has(where)) continue
    if (rules !== undefined && !targetAllowed({ host, port: chosen.port }, rules)) continue
    seen.add(where)
    const labels: Record<string, string> = {
      __param_module: moduleName,
      domain: chosen.mx,
      mx: a.mx,
      mx_preference: String(a.preference),
      ...(perAddress ? { ip: a.ip, __param_hostname: a.mx } : {}),
    }
    groups.push({ targets: [where], labels })
  }
  return answer(groups)
}

function answer(groups: TargetGroup[]): SdAnswer {
  return { status: 200, contentType: JSON_TYPE, body: `${JSON.stringify(groups)}\n`, groups }
}
