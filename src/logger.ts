// Logging: a small Logger interface, the process logger (logfmt or JSON), and a probe logger that tees to a buffer.

export const LEVELS = ['debug', 'info', 'warn', 'error'] as const
export type Level = (typeof LEVELS)[number]
export type Attrs = Record<string, unknown>

export interface Logger {
  debug(msg: string, attrs?: Attrs): void
  info(msg: string, attrs?: Attrs): void
  warn(msg: string, attrs?: Attrs): void
  error(msg: string, attrs?: Attrs): void
  child(attrs: Attrs): Logger
}

type Sink = (level: Level, msg: string, attrs: Attrs) => void

function logfmtValue(value: unknown): string {
  const text =
    value instanceof Error ? value.message : typeof value === 'string' ? value : JSON.stringify(value)
  return /^[^\s"=]+$/.test(text) ? text : JSON.stringify(text)
}

export function formatLogfmt(level: Level, msg: string, attrs: Attrs, time = new Date()): string {
  const fields: Attrs = { ts: time.toISOString(), level, msg, ...attrs }
  return Object.entries(fields)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${logfmtValue(v)}`)
    .join(' ')
}

export function formatJson(level: Level, msg: string, attrs: Attrs, time = new Date()): string {
  return JSON.stringify({ ts: time.toISOString(), level, msg, ...attrs }, (_k, v: unknown) =>
    v instanceof Error ? v.message : v,
  )
}

class SinkLogger implements Logger {
  readonly #sink: Sink
  readonly #attrs: Attrs
  constructor(sink: Sink, attrs: Attrs = {}) {
    this.#sink = sink
    this.#attrs = attrs
  }
  debug(msg: string, attrs?: Attrs) {
    this.#sink('debug', msg, { ...this.#attrs, ...attrs })
  }
  info(msg: string, attrs?: Attrs) {
    this.#sink('info', msg, { ...this.#attrs, ...attrs })
  }
  warn(msg: string, attrs?: Attrs) {
    this.#sink('warn', msg, { ...this.#attrs, ...attrs })
  }
  error(msg: string, attrs?: Attrs) {
    this.#sink('error', msg, { ...this.#attrs, ...attrs })
  }
  child(attrs: Attrs): Logger {
    return new SinkLogger(this.#sink, { ...this.#attrs, ...attrs })
  }
}

/** The process logger: lines at `level` and above, to `write` (stderr by default). */
export function createLogger(
  options: { level: Level; format: 'logfmt' | 'json' },
  write: (line: string) => void = (line) => process.stderr.write(line + '\n'),
): Logger {
  const min = LEVELS.indexOf(options.level)
  const format = options.format === 'json' ? formatJson : formatLogfmt
  return new SinkLogger((level, msg, attrs) => {
    if (LEVELS.indexOf(level) >= min) write(format(level, msg, attrs))
  })
}

/** A logger that drops everything (tests, benchmarks). */
export const silentLogger: Logger = new SinkLogger(() => undefined)

/**
 * The logger of one probe: every line (debug included) goes to `lines` for ?debug=true and the
 * landing page, and through `parent` to the process log, which applies its own level.
 */
export function createProbeLogger(parent: Logger, attrs: Attrs): { logger: Logger; lines: string[] } {
  const lines: string[] = []
  const forward = parent.child(attrs)
  const logger = new SinkLogger((level, msg, a) => {
    lines.push(formatLogfmt(level, msg, a))
    forward[level](msg, a)
  })
  return { logger, lines }
}
