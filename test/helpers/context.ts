// A ProbeContext for calling a prober directly in tests (fresh registry, silent logger, a deadline).
import { Registry } from 'prom-client'
import { silentLogger } from '../../src/logger.ts'
import { TokenSources } from '../../src/oauth2/sources.ts'
import { ProbePhases } from '../../src/phases.ts'
import type { ProbeContext } from '../../src/prober.ts'

export function testContext(timeoutMs = 5000, overrides: Partial<ProbeContext> = {}): ProbeContext {
  const registry = overrides.registry ?? new Registry()
  return {
    signal: AbortSignal.timeout(timeoutMs),
    registry,
    logger: silentLogger,
    phases: new ProbePhases(registry),
    deadline: Date.now() + timeoutMs,
    moduleName: 'test',
    state: undefined,
    tokens: new TokenSources(),
    ...overrides,
  }
}
