// A ProbeContext for calling a prober directly in tests (fresh registry, silent logger, a deadline).
import { Registry } from 'prom-client'
import { silentLogger } from '../../src/logger.ts'
import type { ProbeContext } from '../../src/prober.ts'
import { RoundtripStates } from '../../src/probers/roundtrip/state.ts'

export function testContext(timeoutMs = 5000, overrides: Partial<ProbeContext> = {}): ProbeContext {
  return {
    signal: AbortSignal.timeout(timeoutMs),
    registry: new Registry(),
    logger: silentLogger,
    progress: { phase: undefined },
    deadline: Date.now() + timeoutMs,
    moduleName: 'test',
    roundtripStates: new RoundtripStates(),
    ...overrides,
  }
}
