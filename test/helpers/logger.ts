// A logger for tests that keeps what it was told.
import type { Attrs, Logger } from '../../src/logger.ts'

export interface LoggedLine {
  level: 'debug' | 'info' | 'warn' | 'error'
  msg: string
  attrs: Attrs
}

export function recordingLogger(): { logger: Logger; lines: LoggedLine[] } {
  const lines: LoggedLine[] = []
  const make = (): Logger => ({
    debug: (msg, attrs = {}) => lines.push({ level: 'debug', msg, attrs }),
    info: (msg, attrs = {}) => lines.push({ level: 'info', msg, attrs }),
    warn: (msg, attrs = {}) => lines.push({ level: 'warn', msg, attrs }),
    error: (msg, attrs = {}) => lines.push({ level: 'error', msg, attrs }),
    child: () => make(),
  })
  return { logger: make(), lines }
}
