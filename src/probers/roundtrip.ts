// The roundtrip prober (in progress).
import type { RoundtripModule } from '../config.ts'
import type { Prober } from '../probe.ts'

export const probeRoundtrip: Prober<RoundtripModule> = () =>
  Promise.reject(new Error('the roundtrip prober is not built yet'))
