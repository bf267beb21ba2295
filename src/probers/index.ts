// The probers, and runProber(): the only switch over module kinds.
import type { Module } from '../config.ts'
import type { ProbeContext } from '../prober.ts'
import type { Target } from '../targets.ts'
import { probeImap } from './imap/index.ts'
import { probePop3 } from './pop3/index.ts'
import { probeRoundtrip } from './roundtrip/index.ts'
import { probeSmtp } from './smtp/index.ts'

export function runProber(target: Target, module: Module, ctx: ProbeContext): Promise<void> {
  switch (module.prober) {
    case 'smtp':
      return probeSmtp(target, module, ctx)
    case 'pop3':
      return probePop3(target, module, ctx)
    case 'imap':
      return probeImap(target, module, ctx)
    case 'roundtrip':
      return probeRoundtrip(target, module, ctx)
  }
}
