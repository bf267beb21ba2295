// What callers may ask of the exporter: how many probes run at once (ProbeSlots), and how often one
// module may probe one target (IntervalGate), and when it must not log in again (AuthBackoff).

/** Concurrency limit: a probe waits for a slot, first come first served, until its signal aborts. */
export class ProbeSlots {
  readonly max: number
  #running = 0
  readonly #waiting: (() => void)[] = []

  constructor(max: number) {
    this.max = max
  }

  get running(): number {
    return this.#running
  }

  get waiting(): number {
    return this.#waiting.length
  }

  /** Resolves with a release function once a slot is free; false when `signal` aborts first. */
  acquire(signal: AbortSignal): Promise<(() => void) | false> {
    if (signal.aborted) return Promise.resolve(false)
    if (this.#running < this.max) {
      this.#running++
      return Promise.resolve(this.#releaser())
    }
    return new Promise((resolve) => {
      const onAbort = () => {
        const i = this.#waiting.indexOf(grant)
        if (i >= 0) this.#waiting.splice(i, 1)
        resolve(false)
      }
      const grant = () => {
        signal.removeEventListener('abort', onAbort)
        this.#running++
        resolve(this.#releaser())
      }
      this.#waiting.push(grant)
      signal.addEventListener('abort', onAbort, { once: true })
    })
  }

  #releaser(): () => void {
    let released = false
    return () => {
      if (released) return
      released = true
      this.#running--
      this.#waiting.shift()?.()
    }
  }
}

/**
 * At most one probe per module and target in each min_interval. Entries are kept only as long as
 * they can refuse something, and at most `maxEntries` of them (the oldest go first).
 */
export class IntervalGate {
  readonly #last = new Map<string, { at: number; interval: number }>()
  readonly #maxEntries: number

  constructor(maxEntries = 10_000) {
    this.#maxEntries = maxEntries
  }

  /** Records a probe starting now, or returns the seconds to wait before the next one may start. */
  admit(key: string, intervalSeconds: number, now = Date.now()): number | undefined {
    if (intervalSeconds <= 0) return undefined
    const last = this.#last.get(key)
    if (last && now - last.at < intervalSeconds * 1000) return (last.at + intervalSeconds * 1000 - now) / 1000
    this.#last.delete(key) // re-inserted last: the map's order is the order of starts
    this.#last.set(key, { at: now, interval: intervalSeconds })
    this.#prune(now)
    return undefined
  }

  /** Forgets a start that did not probe after all (refused later, e.g. no free slot). */
  forget(key: string, at: number): void {
    if (this.#last.get(key)?.at === at) this.#last.delete(key)
  }

  get size(): number {
    return this.#last.size
  }

  #prune(now: number) {
    for (const [key, entry] of this.#last) {
      if (this.#last.size <= this.#maxEntries && now - entry.at < entry.interval * 1000) break
      this.#last.delete(key)
    }
  }
}

/** What a probe that failed at authentication left for the probes backed off after it. */
export interface BackedOff<T> {
  /** Until when (ms since the epoch) the module does not log in to this target again. */
  until: number
  /** The failed attempt, replayed meanwhile. */
  attempt: T
}

/**
 * After an authentication failure, a module does not log in to that target again for auth_backoff: a
 * wrong password then costs one login per back-off period, not one per scrape, and does not trip
 * fail2ban or the account's lockout. Entries expire, at most `maxEntries` are kept (oldest go first),
 * and a config reload forgets them all (the password may have been fixed).
 */
export class AuthBackoff<T> {
  readonly #entries = new Map<string, BackedOff<T>>()
  readonly #maxEntries: number

  /** Each entry holds a probe's answer: far fewer than IntervalGate's. */
  constructor(maxEntries = 1000) {
    this.#maxEntries = maxEntries
  }

  /** The failed attempt to replay, while the key backs off. */
  current(key: string, now = Date.now()): BackedOff<T> | undefined {
    const entry = this.#entries.get(key)
    if (entry === undefined || entry.until > now) return entry
    this.#entries.delete(key)
    return undefined
  }

  /** A login to `key` was refused: back off for `seconds`. */
  refused(key: string, seconds: number, attempt: T, now = Date.now()): void {
    if (seconds <= 0) return
    this.#entries.delete(key)
    this.#entries.set(key, { until: now + seconds * 1000, attempt })
    for (const [k, entry] of this.#entries) {
      if (this.#entries.size <= this.#maxEntries && entry.until > now) break
      this.#entries.delete(k)
    }
  }

  /** A login to `key` worked (or was not refused): nothing to back off from. */
  cleared(key: string): void {
    this.#entries.delete(key)
  }

  /** On reload. */
  clear(): void {
    this.#entries.clear()
  }

  get size(): number {
    return this.#entries.size
  }
}
