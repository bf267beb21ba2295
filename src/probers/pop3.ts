// The pop3 prober (in progress).
import type { Pop3Module } from '../config.ts'
import type { Prober } from '../probe.ts'

export const probePop3: Prober<Pop3Module> = () =>
  Promise.reject(new Error('the pop3 prober is not built yet'))
