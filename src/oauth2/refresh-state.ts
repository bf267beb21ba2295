// The rotated refresh token of one OAuth2 client, kept in a small JSON file (mode 0600, written atomically) so
// that a restart goes on with the newest one instead of the configured one, which the endpoint may have revoked.
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { errorCode, writeJsonDurably } from '../durable.ts'

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
  await writeJsonDurably(file, state, 0o700)
}
