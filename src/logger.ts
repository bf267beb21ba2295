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

/** `line` with ` key=value` for each field that is not undefined (a plain loop: every transcript line comes here). */
function appendLogfmt(line: string, fields: Attrs): string {
  for (const key of Object.keys(fields)) {
    const value = fields[key]
    if (value !== undefined) line += `${line === '' ? '' : ' '}${key}=${logfmtValue(value)}`
  }
  return line
}

export function formatLogfmt(level: Level, msg: string, attrs: Attrs, time = new Date()): string {
  // attrs named ts, level or msg take the place of the line's own
  if (Object.hasOwn(attrs, 'ts') || Object.hasOwn(attrs, 'level') || Object.hasOwn(attrs, 'msg'))
    return appendLogfmt('', { ts: time.toISOString(), level, msg, ...attrs })
  return appendLogfmt(`ts=${time.toISOString()} level=${level} msg=${logfmtValue(msg)}`, attrs)
}

export function formatJson(level: Level, msg: string, attrs: Attrs, time = new Date()): string {
  return JSON.stringify({ ts: time.toISOString(), level, msg, ...attrs }, (_k, v: unknown) =>
    v instanceof Error ? v.message : v,
  )
}

const RANK: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 }

class SinkLogger implements Logger {
  readonly #sink: Sink
  readonly #attrs: Attrs
  /** The rank of the lowest level the sink takes: lines below it are dropped before their attrs are merged. */
  readonly #min: number
  constructor(sink: Sink, attrs: Attrs = {}, min = 0) {
    this.#sink = sink
    this.#attrs = attrs
    this.#min = min
  }
  #log(level: Level, msg: string, attrs: Attrs | undefined) {
    if (RANK[level] < this.#min) return
    this.#sink(level, msg, attrs === undefined ? { ...this.#attrs } : { ...this.#attrs, ...attrs })
  }
  debug(msg: string, attrs?: Attrs) {
    this.#log('debug', msg, attrs)
  }
  info(msg: string, attrs?: Attrs) {
    this.#log('info', msg, attrs)
  }
  warn(msg: string, attrs?: Attrs) {
    this.#log('warn', msg, attrs)
  }
  error(msg: string, attrs?: Attrs) {
    this.#log('error', msg, attrs)
  }
  child(attrs: Attrs): Logger {
    return new SinkLogger(this.#sink, { ...this.#attrs, ...attrs }, this.#min)
  }
}

/** The process logger: lines at `level` and above, to `write` (stderr by default). */
export function createLogger(
  options: { level: Level; format: 'logfmt' | 'json' },
  write: (line: string) => void = (line) => process.stderr.write(line + '\n'),
): Logger {
  const format = options.format === 'json' ? formatJson : formatLogfmt
  return new SinkLogger((level, msg, attrs) => write(format(level, msg, attrs)), {}, RANK[options.level])
}

/** A logger that drops everything (tests, benchmarks). */
export const silentLogger: Logger = new SinkLogger(() => undefined)

/** How much of its dialogue one probe keeps: a flooding server must not be able to grow memory. */
export interface TranscriptLimits {
  /** Longer lines are cut, with a note saying how much. */
  maxLineBytes: number
  /** Lines kept from the start, and bytes they may take. */
  headLines: number
  headBytes: number
  /** The last lines, which usually say why a probe failed. */
  tailLines: number
  tailBytes: number
}

export const TRANSCRIPT_LIMITS: TranscriptLimits = {
  maxLineBytes: 4096,
  headLines: 800,
  headBytes: 48 * 1024,
  tailLines: 200,
  tailBytes: 16 * 1024,
}

/**
 * A bounded transcript: the first lines, then (once the head is full) a "... N more lines, M bytes
 * cut ..." marker, then the newest lines, which usually say why a probe failed.
 */
export class Transcript {
  readonly #limits: TranscriptLimits
  readonly #head: string[] = []
  #headBytes = 0
  #headFull = false
  /** A ring of the newest lines once the head is full. */
  readonly #tail: string[] = []
  #tailStart = 0
  #tailBytes = 0
  #cutLines = 0
  #cutBytes = 0

  constructor(limits: TranscriptLimits = TRANSCRIPT_LIMITS) {
    this.#limits = limits
  }

  add(text: string): void {
    const limits = this.#limits
    const line =
      text.length > limits.maxLineBytes
        ? `${text.slice(0, limits.maxLineBytes)} ... (${text.length - limits.maxLineBytes} bytes cut)`
        : text
    if (!this.#headFull) {
      if (this.#head.length < limits.headLines && this.#headBytes + line.length <= limits.headBytes) {
        this.#head.push(line)
        this.#headBytes += line.length
        return
      }
      this.#headFull = true
    }
    this.#tail.push(line)
    this.#tailBytes += line.length
    while (
      this.#tail.length - this.#tailStart > limits.tailLines ||
      (this.#tailBytes > limits.tailBytes && this.#tail.length - this.#tailStart > 1)
    ) {
      const dropped = this.#tail[this.#tailStart] ?? ''
      this.#tailStart++
      this.#tailBytes -= dropped.length
      this.#cutLines++
      this.#cutBytes += dropped.length
    }
    // Compact now and then, so the ring costs O(1) per line and stays bounded.
    if (this.#tailStart > limits.tailLines) {
      this.#tail.splice(0, this.#tailStart)
      this.#tailStart = 0
    }
  }

  /** Whether lines are being cut (then debug lines no longer go to the process log either). */
  get cutting(): boolean {
    return this.#cutLines > 0
  }

  lines(): string[] {
    if (!this.#headFull) return [...this.#head]
    const marker =
      this.#cutLines === 0
        ? '... (transcript limit reached: the newest lines follow) ...'
        : `... ${this.#cutLines} more lines, ${this.#cutBytes} bytes cut ...`
    return [...this.#head, marker, ...this.#tail.slice(this.#tailStart)]
  }
}

/**
 * The logger of one probe: every line (debug included) goes to `transcript` for ?debug=true and the
 * landing page, within TRANSCRIPT_LIMITS, and through `parent` to the process log, which applies
 * its own level. Once the transcript cuts lines, debug lines are no longer forwarded either: a
 * flooding server must not flood the process log.
 */
export function createProbeLogger(
  parent: Logger,
  attrs: Attrs,
  limits: TranscriptLimits = TRANSCRIPT_LIMITS,
): { logger: Logger; transcript: Transcript } {
  const transcript = new Transcript(limits)
  const forward = parent.child(attrs)
  const logger = new SinkLogger((level, msg, a) => {
    transcript.add(formatLogfmt(level, msg, a))
    if (level !== 'debug' || !transcript.cutting) forward[level](msg, a)
  })
  return { logger, transcript }
}
