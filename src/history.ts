// Recent probe results for the landing page: bounded, and failures are kept longer than successes.
import type { PhaseStep } from './phases.ts'

export interface ProbeRecord {
  id: number
  time: Date
  module: string
  target: string
  success: boolean
  durationSeconds: number
  failedPhase: string | undefined
  /** What ?debug=true shows, rendered on demand (/logs): most probes are never looked at. */
  debugText: () => string
  /** What the pieces behind debugText take, for the byte budget. */
  debugBytes: number
  /** The probe's steps, for its waterfall (bounded by ProbePhases' MAX_STEPS). */
  phases: readonly PhaseStep[]
}

/** What one kept step costs, roughly: the object and its numbers; the strings it names (metric, phase) are shared. */
const STEP_BYTES = 96

/** A record's approximate size for the byte budget: its debug text's pieces and its steps. */
function recordBytes(record: ProbeRecord): number {
  let bytes = record.debugBytes
  for (const step of record.phases) bytes += STEP_BYTES + step.name.length + (step.host?.length ?? 0)
  return bytes
}

export class History {
  #nextId = 1
  #successes: ProbeRecord[] = []
  #failures: ProbeRecord[] = []
  readonly #maxSuccesses: number
  readonly #maxFailures: number
  readonly #maxBytes: number
  #bytes = 0

  /** maxBytes bounds the debug texts and steps kept in all (each probe's transcript and steps are bounded too). */
  constructor(maxSuccesses = 50, maxFailures = 200, maxBytes = 32 * 1024 * 1024) {
    this.#maxSuccesses = maxSuccesses
    this.#maxFailures = maxFailures
    this.#maxBytes = maxBytes
  }

  /** Without `phases`, the record has no steps. */
  add(record: Omit<ProbeRecord, 'id' | 'phases'> & { phases?: readonly PhaseStep[] }): ProbeRecord {
    const full: ProbeRecord = { ...record, phases: record.phases ?? [], id: this.#nextId++ }
    const list = full.success ? this.#successes : this.#failures
    list.push(full)
    this.#bytes += recordBytes(full)
    if (list.length > (full.success ? this.#maxSuccesses : this.#maxFailures)) this.#drop(list)
    // Over the byte budget: the oldest successes go first, then the oldest failures (never the new one).
    while (this.#bytes > this.#maxBytes && this.#successes.length + this.#failures.length > 1)
      this.#drop(this.#successes.length > (full.success ? 1 : 0) ? this.#successes : this.#failures)
    return full
  }

  #drop(list: ProbeRecord[]) {
    const dropped = list.shift()
    if (dropped) this.#bytes -= recordBytes(dropped)
  }

  /** Newest first. */
  list(): ProbeRecord[] {
    return [...this.#successes, ...this.#failures].sort((a, b) => b.id - a.id)
  }

  get(id: number): ProbeRecord | undefined {
    return this.#successes.find((r) => r.id === id) ?? this.#failures.find((r) => r.id === id)
  }
}
