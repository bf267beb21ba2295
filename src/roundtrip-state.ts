// Deferred round trips: the mails in flight per module and target, kept in a small JSON file across restarts.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'

export interface InFlight {
  id: string
  /** When the SMTP server accepted it (ms since epoch). */
  acceptedAt: number
}

export interface RouteState {
  inflight: InFlight[]
  /** Since the state file was created (it survives restarts). */
  lost: number
  swept: number
}

interface FileContent {
  version: 1
  routes: Record<string, RouteState>
}

const emptyRoute = (): RouteState => ({ inflight: [], lost: 0, swept: 0 })

/**
 * One state file. Network work happens outside `update`: a scrape reads a snapshot, searches the mailbox,
 * then applies what it found in one short, serialized read-modify-write. A mail found or lost by an
 * overlapping scrape is therefore counted once, whichever scrape gets there first.
 */
export class RoundtripStateFile {
  /** undefined: kept in memory only (sync modules: counters since the exporter started). */
  readonly file: string | undefined
  #content: FileContent | undefined
  #queue: Promise<unknown> = Promise.resolve()

  constructor(file: string | undefined) {
    this.file = file
  }

  #load(): FileContent {
    if (this.#content) return this.#content
    if (this.file === undefined) return (this.#content = { version: 1, routes: {} })
    try {
      const parsed = JSON.parse(readFileSync(this.file, 'utf8')) as Partial<FileContent>
      this.#content = { version: 1, routes: parsed.routes ?? {} }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        throw new Error(`cannot read state file ${this.file}: ${(err as Error).message}`)
      this.#content = { version: 1, routes: {} }
    }
    return this.#content
  }

  #save(content: FileContent) {
    if (this.file === undefined) return
    mkdirSync(dirname(this.file), { recursive: true })
    const tmp = `${this.file}.${process.pid}.tmp`
    writeFileSync(tmp, JSON.stringify(content, null, 2) + '\n', { mode: 0o600 })
    renameSync(tmp, this.file) // atomic: a crash leaves the old file or the new one, never half of one
  }

  /** A copy of the route's state (no lock held: the caller searches the mailbox with it). */
  snapshot(key: string): RouteState {
    const route = this.#load().routes[key] ?? emptyRoute()
    return { inflight: route.inflight.map((m) => ({ ...m })), lost: route.lost, swept: route.swept }
  }

  /** Applies `change` to the current state of the route and saves, one caller at a time. */
  update<T>(key: string, change: (route: RouteState) => T): Promise<T> {
    const run = this.#queue.then(() => {
      const content = this.#load()
      const route = (content.routes[key] ??= emptyRoute())
      const result = change(route)
      this.#save(content)
      return result
    })
    this.#queue = run.catch(() => undefined)
    return run
  }
}

/** The state of all round-trip modules: one object per state file, one in memory for modules without one. */
export class RoundtripStates {
  readonly #files = new Map<string | undefined, RoundtripStateFile>()
  get(file: string | undefined): RoundtripStateFile {
    // One object per file, however its path is spelled (state.json, ./state.json).
    const path = file === undefined ? undefined : resolve(file)
    let state = this.#files.get(path)
    if (!state) {
      state = new RoundtripStateFile(path)
      this.#files.set(path, state)
    }
    return state
  }
}
