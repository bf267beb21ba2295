// The imap prober (in progress).
import type { ImapModule } from '../config.ts'
import type { Prober } from '../probe.ts'

export const probeImap: Prober<ImapModule> = () =>
  Promise.reject(new Error('the imap prober is not built yet'))
