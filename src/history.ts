// Recent probe results for the landing page: bounded, and failures are kept longer than successes.

export interface ProbeRecord {
  id: number
  time: Date
  module: string
  target: string
  success: boolean
  durationSeconds: number
  failedPhase: string | undefined
  debugText: string
}

export class History {
  #nextId = 1
  #successes: ProbeRecord[] = []
  #failures: ProbeRecord[] = []
  readonly #maxSuccesses: number
  readonly #maxFailures: number
  readonly #maxBytes: number
  #bytes = 0

  /** maxBytes bounds the debug texts kept in all (each probe's transcript is bounded too). */
  constructor(maxSuccesses = 50, maxFailures = 200, maxBytes = 32 * 1024 * 1024) {
    this.#maxSuccesses = maxSuccesses
    this.#maxFailures = maxFailures
    this.#maxBytes = maxBytes
  }

  add(record: Omit<ProbeRecord, 'id'>): ProbeRecord {
    const full = { ...record, id: this.#nextId++ }
    const list = full.success ? this.#successes : this.#failures
    list.push(full)
    this.#bytes += full.debugText.length
    if (list.length > (full.success ? this.#maxSuccesses : this.#maxFailures)) this.#drop(list)
    // Over the byte budget: the oldest successes go first, then the oldest failures (never the new one).
    while (this.#bytes > this.#maxBytes && this.#successes.length + this.#failures.length > 1)
      this.#drop(this.#successes.length > (full.success ? 1 : 0) ? this.#successes : this.#failures)
    return full
  }

  #drop(list: ProbeRecord[]) {
    const dropped = list.shift()
    if (dropped) this.#bytes -= dropped.debugText.length
  }

  /** Newest first. */
  list(): ProbeRecord[] {
    return [...this.#successes, ...this.#failures].sort((a, b) => b.id - a.id)
  }

  get(id: number): ProbeRecord | undefined {
    return this.#successes.find((r) => r.id === id) ?? this.#failures.find((r) => r.id === id)
  }
}
