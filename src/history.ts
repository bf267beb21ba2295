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

  constructor(maxSuccesses = 50, maxFailures = 200) {
    this.#maxSuccesses = maxSuccesses
    this.#maxFailures = maxFailures
  }

  add(record: Omit<ProbeRecord, 'id'>): ProbeRecord {
    const full = { ...record, id: this.#nextId++ }
    const list = full.success ? this.#successes : this.#failures
    list.push(full)
    if (list.length > (full.success ? this.#maxSuccesses : this.#maxFailures)) list.shift()
    return full
  }

  /** Newest first. */
  list(): ProbeRecord[] {
    return [...this.#successes, ...this.#failures].sort((a, b) => b.id - a.id)
  }

  get(id: number): ProbeRecord | undefined {
    return this.#successes.find((r) => r.id === id) ?? this.#failures.find((r) => r.id === id)
  }
}
