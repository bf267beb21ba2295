// Files that survive a crash: JSON written to a new temp file (0600), fsynced, renamed over the old one,
// and the directory fsynced, so that a crash leaves the old file or the new one, never half of one.
import { randomBytes } from 'node:crypto'
import { closeSync, fsyncSync, openSync } from 'node:fs'
import { mkdir, open, rename, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'

export const errorCode = (err: unknown) => (err as NodeJS.ErrnoException | undefined)?.code

/** A fresh name next to `file` for writing before the rename. */
export const tempName = (file: string) =>
  `${file}.${String(process.pid)}.${randomBytes(6).toString('hex')}.tmp`

/** File systems that cannot fsync a directory say so with one of these; the sync is then skipped. */
const NO_DIR_SYNC = ['EINVAL', 'ENOTSUP', 'EISDIR', 'EPERM', 'EBADF']

/** fsync of a directory, so that a rename in it survives a crash. */
export async function syncDir(dir: string): Promise<void> {
  let handle
  try {
    handle = await open(dir, 'r')
    await handle.sync()
  } catch (err) {
    if (!NO_DIR_SYNC.includes(errorCode(err) ?? '')) throw err
  } finally {
    await handle?.close()
  }
}

/** syncDir, for the few places that must not yield (a lock taken at start). */
export function syncDirSync(dir: string): void {
  let fd: number | undefined
  try {
    fd = openSync(dir, 'r')
    fsyncSync(fd)
  } catch (err) {
    if (!NO_DIR_SYNC.includes(errorCode(err) ?? '')) throw err
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

/** Writes `content` as JSON to `file` durably (see the header); the directory is made if missing. */
export async function writeJsonDurably(file: string, content: unknown, dirMode?: number): Promise<void> {
  const dir = dirname(file)
  await mkdir(dir, { recursive: true, ...(dirMode === undefined ? {} : { mode: dirMode }) })
  const temp = tempName(file)
  try {
    const handle = await open(temp, 'wx', 0o600)
    try {
      await handle.writeFile(`${JSON.stringify(content, null, 2)}\n`)
      await handle.sync() // the data is on disk before the rename makes it the file
    } finally {
      await handle.close()
    }
    await rename(temp, file)
  } catch (err) {
    await unlink(temp).catch(() => undefined)
    throw err
  }
  await syncDir(dir) // the rename itself survives a crash
}
