// The rotated refresh token of one OAuth2 client, kept in a small JSON file (mode 0600, written atomically) so
// that a restart goes on with the newest one instead of the configured one, which the endpoint may have revoked.
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'

const VERSION = 1

/**
 * What the file holds. `token_url`, `client_id` and the configured refresh token's SHA-256 say whose it
 * is: a file left by another client, or from before the configured refresh token was replaced (someone
 * consented again), is not used.
 */
export interface RefreshState {
  version: typeof VERSION
  token_url: string
  client_id: string
  configured_refresh_token_sha256: string
  refresh_token: string
  updated_at: string
}

/** Whose refresh token a state file may hold. */
export interface RefreshOwner {
  token_url: string
  client_id: string
  /** The refresh token in the config (the file is valid only for the same one). */
  configured: string
}

export const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex')

export type LoadedState =
  | { status: 'missing' }
  | { status: 'used'; refreshToken: string }
  | { status: 'other_owner' }
  | { status: 'unreadable'; problem: string }

const errorCode = (err: unknown) => (err as NodeJS.ErrnoException | undefined)?.code

/** The refresh token persisted for `owner`, if the file exists, parses and is theirs. */
export async function loadRefreshState(file: string, owner: RefreshOwner): Promise<LoadedState> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return { status: 'missing' }
    return { status: 'unreadable', problem: `cannot read it: ${errorCode(err) ?? String(err)}` }
  }
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch {
    return { status: 'unreadable', problem: 'it is not JSON' }
  }
  const state = data as Partial<Record<keyof RefreshState, unknown>> | null
  if (typeof state !== 'object' || state === null || state.version !== VERSION)
    return { status: 'unreadable', problem: `it is not a version ${String(VERSION)} refresh token state` }
  if (typeof state.refresh_token !== 'string' || !/^[\x21-\x7e]+$/.test(state.refresh_token))
    return { status: 'unreadable', problem: 'its refresh_token is missing or not printable ASCII' }
  if (
    state.token_url !== owner.token_url ||
    state.client_id !== owner.client_id ||
    state.configured_refresh_token_sha256 !== sha256(owner.configured)
  )
    return { status: 'other_owner' }
  return { status: 'used', refreshToken: state.refresh_token }
}

/** Writes the state to a new temp file (0600) next to `file`, fsyncs it and renames it over `file`. */
export async function saveRefreshState(file: string, owner: RefreshOwner, refreshToken: string, now: Date) {
  const state: RefreshState = {
    version: VERSION,
    token_url: owner.token_url,
    client_id: owner.client_id,
    configured_refresh_token_sha256: sha256(owner.configured),
    refresh_token: refreshToken,
    updated_at: now.toISOString(),
  }
  const dir = dirname(file)
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const temp = `${file}.${String(process.pid)}.${randomBytes(6).toString('hex')}.tmp`
  try {
    const handle = await open(temp, 'wx', 0o600)
    try {
      await handle.writeFile(`${JSON.stringify(state, null, 2)}\n`)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(temp, file)
  } catch (err) {
    await unlink(temp).catch(() => undefined)
    throw err
  }
  await syncDir(dir)
}

/** fsync of the directory, so that the rename survives a crash; file systems that cannot are skipped. */
async function syncDir(dir: string) {
  let handle
  try {
    handle = await open(dir, 'r')
    await handle.sync()
  } catch (err) {
    if (!['EINVAL', 'ENOTSUP', 'EISDIR', 'EPERM', 'EBADF'].includes(errorCode(err) ?? '')) throw err
  } finally {
    await handle?.close()
  }
}
