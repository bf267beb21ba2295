// Deferred round trips: the mails in flight per module and target, kept in a small JSON file across restarts.
// The file is validated on load (a bad one is moved aside), written atomically and durably, and locked so that
// two exporters never share it.
import { randomBytes } from 'node:crypto'
import {
  closeSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs'
import { readFile, unlink, utimes } from 'node:fs/promises'
import { hostname } from 'node:os'
import { basename, dirname, join, resolve } from 'node:path'
import type { Registry } from 'prom-client'
import { z } from 'zod'
import { errorCode, syncDirSync, tempName, writeJsonDurably } from '../../durable.ts'
import { roundtripStateResetCounter } from '../../exporter-metrics.ts'
import { silentLogger, type Logger } from '../../logger.ts'

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

const VERSION = 1

const count = z.number().int().nonnegative()
const FileSchema = z.object({
  version: z.literal(VERSION),
  routes: z.record(
    z.string(),
    z.object({
      inflight: z.array(z.object({ id: z.string().min(1), acceptedAt: z.number().nonnegative() })),
      lost: count,
      swept: count,
    }),
  ),
})
type FileContent = z.output<typeof FileSchema>

const emptyRoute = (): RouteState => ({ inflight: [], lost: 0, swept: 0 })
const emptyContent = (): FileContent => ({ version: VERSION, routes: {} })

/** A temp file next to `file`: pid alone is not unique (every container's process is pid 1 on a shared volume). */
const TEMP_PATTERN = /^\.\d+\.[0-9a-f]{12}\.tmp$/

/** What is wrong with a state file's text, or its content. */
function parseState(text: string): { content: FileContent } | { problem: string } {
  if (text.trim() === '') return { problem: 'the file is empty' }
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch (err) {
    return { problem: `not JSON: ${(err as Error).message}` }
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data))
    return { problem: 'not a JSON object' }
  const version = (data as { version?: unknown }).version
  if (version !== VERSION)
    return {
      problem: `version ${version === undefined ? 'missing' : JSON.stringify(version)}, this exporter reads version ${String(VERSION)}`,
    }
  const result = FileSchema.safeParse(data)
  if (!result.success)
    return {
      problem: result.error.issues
        .map((i) => `${i.path.map(String).join('.') || '(top)'}: ${i.message}`)
        .join('; '),
    }
  return { content: result.data }
}

/** Writes a new file (never an existing one) and fsyncs it. */
function writeNewSync(path: string, text: string) {
  const fd = openSync(path, 'wx', 0o600)
  try {
    writeSync(fd, text)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

// ---------------------------------------------------------------- the lock

/** What a lock file says about its holder. */
interface LockInfo {
  token: string
  hostname: string
  pid: number
  /** The holder's pid namespace (Linux): its pid can only be checked from the same one. */
  pidns: string
  since: string
}

export interface LockTiming {
  /** How often the holder refreshes its lock file's mtime. */
  heartbeatMs: number
  /** A lock whose mtime is older than this is a crashed holder's. */
  staleMs: number
}

const DEFAULT_TIMING: LockTiming = { heartbeatMs: 5_000, staleMs: 30_000 }

function pidNamespace(): string {
  try {
    return readlinkSync('/proc/self/ns/pid')
  } catch {
    return '' // not Linux: hostname and pid say it all
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return errorCode(err) === 'EPERM' // exists, but not ours to signal
  }
}

function readHolder(path: string): { info: LockInfo | undefined; mtimeMs: number } | undefined {
  try {
    const mtimeMs = statSync(path).mtimeMs
    let info: LockInfo | undefined
    try {
      const data = JSON.parse(readFileSync(path, 'utf8')) as Partial<LockInfo>
      if (
        typeof data.token === 'string' &&
        typeof data.hostname === 'string' &&
        Number.isInteger(data.pid) &&
        Number(data.pid) > 0
      )
        info = {
          token: data.token,
          hostname: data.hostname,
          pid: Number(data.pid),
          pidns: typeof data.pidns === 'string' ? data.pidns : '',
          since: typeof data.since === 'string' ? data.since : '?',
        }
    } catch {
      // unreadable content: only the heartbeat can tell
    }
    return { info, mtimeMs }
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return undefined
    throw err
  }
}

/** Why a holder is gone (a stale lock), or undefined while it may still be alive. */
function staleReason(
  holder: { info: LockInfo | undefined; mtimeMs: number },
  timing: LockTiming,
): string | undefined {
  const age = Date.now() - holder.mtimeMs
  if (age > timing.staleMs) return `no heartbeat for ${(age / 1000).toFixed(0)}s`
  const info = holder.info
  // Its pid means something only on the same host in the same pid namespace (containers sharing a
  // volume are all pid 1, in namespaces of their own).
  if (info && info.hostname === hostname() && info.pidns === pidNamespace() && !pidAlive(info.pid))
    return `process ${String(info.pid)} is gone`
  return undefined
}

function describeHolder(holder: { info: LockInfo | undefined; mtimeMs: number }): string {
  const beat = `heartbeat ${((Date.now() - holder.mtimeMs) / 1000).toFixed(1)}s ago`
  const info = holder.info
  if (!info) return `an unknown holder (unreadable lock file, ${beat})`
  return `host ${info.hostname}, pid ${String(info.pid)}, since ${info.since}, ${beat}`
}

/** Another live exporter holds the state file. */
export class StateLockedError extends Error {
  override name = 'StateLockedError'
  readonly file: string
  readonly holder: string
  constructor(file: string, holder: string, staleMs: number) {
    super(
      `state file ${file} is in use by another exporter (${holder}); one exporter per state file. ` +
        `A lock not refreshed for ${String(staleMs / 1000)}s is taken over; its lock file is ${file}.lock`,
    )
    this.file = file
    this.holder = holder
  }
}

/** A held lock: `<state file>.lock`, whose mtime the holder refreshes (the heartbeat). */
class StateLock {
  readonly path: string
  readonly token: string
  /** Set when another process took the lock from us (we were presumed dead). */
  lost = false
  readonly #timer: NodeJS.Timeout
  readonly #logger: Logger
  #beating: Promise<void> = Promise.resolve()

  private constructor(path: string, token: string, timing: LockTiming, logger: Logger) {
    this.path = path
    this.token = token
    this.#logger = logger
    this.#timer = setInterval(() => {
      this.#beating = this.#beat()
    }, timing.heartbeatMs)
    this.#timer.unref()
  }

  async #beat() {
    if (this.lost) return
    try {
      const info = JSON.parse(await readFile(this.path, 'utf8')) as Partial<LockInfo>
      if (info.token !== this.token)
        throw new Error(`taken over by host ${String(info.hostname)} pid ${String(info.pid)}`)
      const now = new Date()
      await utimes(this.path, now, now)
    } catch (err) {
      this.lost = true
      clearInterval(this.#timer)
      this.#logger.error('lost the lock on a round-trip state file: no more writes to it', {
        lock: this.path,
        err: (err as Error).message,
      })
    }
  }

  /** Creates `<file>.lock`, taking over a stale one; throws StateLockedError when a live exporter holds it. */
  static acquire(file: string, timing: LockTiming, logger: Logger): StateLock {
    const path = `${file}.lock`
    mkdirSync(dirname(file), { recursive: true })
    const me: LockInfo = {
      token: randomBytes(16).toString('hex'),
      hostname: hostname(),
      pid: process.pid,
      pidns: pidNamespace(),
      since: new Date().toISOString(),
    }
    // Written in full under a temp name, then linked into place: nobody ever sees a half-written lock file,
    // and link() fails when the name exists (O_EXCL semantics).
    const tmp = tempName(path)
    writeNewSync(tmp, JSON.stringify(me) + '\n')
    try {
      for (let attempt = 0; attempt < 5; attempt++) {
        try {
          linkSync(tmp, path)
          syncDirSync(dirname(path))
          return new StateLock(path, me.token, timing, logger)
        } catch (err) {
          if (errorCode(err) !== 'EEXIST') throw err
        }
        const holder = readHolder(path)
        if (!holder) continue // released meanwhile
        const stale = staleReason(holder, timing)
        if (stale === undefined) throw new StateLockedError(file, describeHolder(holder), timing.staleMs)
        // Move the stale lock away under a unique name (rename is atomic: of two exporters taking over,
        // one gets it), then check that what was moved is the lock judged stale and not a new one.
        const moved = `${path}.stale-${randomBytes(6).toString('hex')}`
        try {
          renameSync(path, moved)
        } catch (err) {
          if (errorCode(err) === 'ENOENT') continue
          throw err
        }
        const movedHolder = readHolder(moved)
        if (movedHolder?.info?.token !== holder.info?.token) {
          try {
            linkSync(moved, path) // a live lock taken meanwhile: put it back
          } catch {
            // yet another one is in place already
          }
          unlinkSync(moved)
          continue
        }
        unlinkSync(moved)
        logger.warn('took over the lock of a round-trip state file from a holder that is gone', {
          file,
          holder: describeHolder(holder),
          reason: stale,
        })
      }
      throw new Error(`cannot lock state file ${file}: its lock keeps changing hands`)
    } finally {
      unlinkSync(tmp)
    }
  }

  /** release() at once, for a lock just taken (no heartbeat can be under way). */
  releaseSync() {
    clearInterval(this.#timer)
    try {
      const info = JSON.parse(readFileSync(this.path, 'utf8')) as Partial<LockInfo>
      if (info.token === this.token) unlinkSync(this.path)
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err
    }
  }

  /** Stops the heartbeat and removes the lock file if it is still ours. */
  async release() {
    clearInterval(this.#timer)
    await this.#beating
    if (this.lost) return
    try {
      const info = JSON.parse(await readFile(this.path, 'utf8')) as Partial<LockInfo>
      if (info.token === this.token) await unlink(this.path)
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err
    }
  }
}

// ---------------------------------------------------------------- one state file

interface StateOptions {
  logger: Logger
  /** Counts state files found unreadable and started afresh. */
  onReset: () => void
}

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
  #lock: StateLock | undefined
  #closed = false
  readonly #options: StateOptions

  constructor(file: string | undefined, options: Partial<StateOptions> = {}) {
    this.file = file
    this.#options = { logger: options.logger ?? silentLogger, onReset: options.onReset ?? (() => undefined) }
  }

  /** Reads and validates the file once; a bad one is moved aside, logged and counted, and we start afresh. */
  load(): FileContent {
    if (this.#content) return this.#content
    if (this.file === undefined) return (this.#content = emptyContent())
    let text: string
    try {
      text = readFileSync(this.file, 'utf8')
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return (this.#content = emptyContent())
      throw new Error(`cannot read state file ${this.file}: ${(err as Error).message}`)
    }
    const parsed = parseState(text)
    if ('content' in parsed) return (this.#content = parsed.content)
    const aside = `${this.file}.corrupt-${new Date().toISOString()}`
    let moved: string | undefined = aside
    try {
      renameSync(this.file, aside)
    } catch (err) {
      moved = undefined
      this.#options.logger.error('cannot move the bad state file aside; it will be overwritten', {
        file: this.file,
        err: (err as Error).message,
      })
    }
    this.#options.logger.error('round-trip state file is invalid: set aside, starting with an empty state', {
      file: this.file,
      problem: parsed.problem,
      moved_to: moved ?? 'not moved',
    })
    this.#options.onReset()
    return (this.#content = emptyContent())
  }

  async #save(content: FileContent) {
    if (this.file === undefined) return
    if (this.#lock?.lost) throw new Error(`state file ${this.file}: another exporter took its lock`)
    await writeJsonDurably(this.file, content)
  }

  /** A copy of the route's state (no lock held: the caller searches the mailbox with it). */
  snapshot(key: string): RouteState {
    const route = this.load().routes[key] ?? emptyRoute()
    return { inflight: route.inflight.map((m) => ({ ...m })), lost: route.lost, swept: route.swept }
  }

  /** Applies `change` to the current state of the route and saves, one caller at a time. */
  update<T>(key: string, change: (route: RouteState) => T): Promise<T> {
    // Refused when asked after close(); what was asked before still runs (close waits for it).
    if (this.#closed)
      return Promise.reject(new Error(`state file ${this.file ?? '(memory)'} is closed: shutting down`))
    const run = this.#queue.then(async () => {
      const content = this.load()
      const route = (content.routes[key] ??= emptyRoute())
      const result = change(route)
      await this.#save(content)
      return result
    })
    this.#queue = run.catch(() => undefined)
    return run
  }

  get locked(): boolean {
    return this.#lock !== undefined
  }

  /** Takes the file's lock (once), then loads it: a second exporter fails here, at start. */
  lock(timing: LockTiming): void {
    if (this.file === undefined || this.#lock) return
    const lock = StateLock.acquire(this.file, timing, this.#options.logger)
    try {
      this.#removeLeftovers()
      this.load()
    } catch (err) {
      lock.releaseSync()
      throw err
    }
    this.#lock = lock
  }

  /** Releases the lock (if held), keeping the state usable. */
  async unlock(): Promise<void> {
    const lock = this.#lock
    this.#lock = undefined
    await lock?.release()
  }

  /** unlock() at once, for a lock taken in the same call (see RoundtripStates.lock). */
  unlockSync(): void {
    this.#lock?.releaseSync()
    this.#lock = undefined
  }

  /** Temp files of a writer that crashed mid-write (safe to remove: we hold the lock). */
  #removeLeftovers() {
    if (this.file === undefined) return
    const dir = dirname(this.file)
    const base = basename(this.file)
    for (const name of readdirSync(dir)) {
      if (name.startsWith(base) && TEMP_PATTERN.test(name.slice(base.length))) unlinkSync(join(dir, name))
    }
  }

  /** Waits for the pending writes, refuses new ones, and releases the lock. */
  async close(): Promise<void> {
    this.#closed = true
    await this.#queue
    await this.unlock()
  }
}

// ---------------------------------------------------------------- all of them

/** As much of a config as the state files are found in (config.ts's Config is one). */
interface ModulesConfig {
  modules: Record<string, { prober: string; roundtrip?: { state_file?: string | undefined } }>
}

/** The state of all round-trip modules: one object per state file, one in memory for modules without one. */
export class RoundtripStates {
  readonly #files = new Map<string | undefined, RoundtripStateFile>()
  readonly #options: StateOptions
  readonly #timing: LockTiming

  /**
   * `registry`: the exporter's own, for mailprobe_exporter_roundtrip_state_reset_total (give it to one
   * instance only). `timing`: the lock's heartbeat (tests shorten it).
   */
  constructor(
    options: {
      logger?: Logger | undefined
      registry?: Registry | undefined
      timing?: Partial<LockTiming> | undefined
    } = {},
  ) {
    const resets = options.registry ? roundtripStateResetCounter(options.registry) : undefined
    this.#options = { logger: options.logger ?? silentLogger, onReset: () => resets?.inc() }
    this.#timing = { ...DEFAULT_TIMING, ...options.timing }
  }

  get(file: string | undefined): RoundtripStateFile {
    // One object per file, however its path is spelled (state.json, ./state.json).
    const path = file === undefined ? undefined : resolve(file)
    let state = this.#files.get(path)
    if (!state) {
      state = new RoundtripStateFile(path, this.#options)
      this.#files.set(path, state)
    }
    return state
  }

  /** A config at start or on reload: its state files are locked and loaded (ProberState.configure). */
  configure(config: ModulesConfig): void {
    this.lock(RoundtripStates.filesOf(config))
  }

  /** Every state file a config names. */
  static filesOf(config: ModulesConfig): string[] {
    const files = Object.values(config.modules).flatMap((m) => {
      const file = m.prober === 'roundtrip' ? m.roundtrip?.state_file : undefined
      return file === undefined ? [] : [resolve(file)]
    })
    return [...new Set(files)]
  }

  /**
   * Locks and loads these state files (those not held yet): at start, and on reload for newly configured
   * ones. Throws StateLockedError naming the file and its holder when another exporter has one; the files
   * locked by this call are then released again.
   */
  lock(files: Iterable<string>): void {
    const taken: RoundtripStateFile[] = []
    try {
      for (const file of files) {
        const state = this.get(file)
        if (state.locked) continue
        state.lock(this.#timing)
        taken.push(state)
      }
    } catch (err) {
      for (const state of taken) state.unlockSync()
      throw err
    }
  }

  /** Waits for pending writes and releases every lock (on SIGTERM, after the probes in flight). */
  async close(): Promise<void> {
    await Promise.all([...this.#files.values()].map((s) => s.close()))
  }
}
