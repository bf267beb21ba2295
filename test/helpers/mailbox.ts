// Looking into (and planting mail in) the real Dovecot's mailboxes from tests, over IMAP.
import { ImapFlow } from 'imapflow'
import { readFileSync } from 'node:fs'
import { mailStack } from './stack.ts'

export interface StoredMail {
  uid: number
  subject: string
  flags: string[]
  source: string
}

async function withImap<T>(user: [string, string], fn: (client: ImapFlow) => Promise<T>): Promise<T> {
  const stack = mailStack()
  const client = new ImapFlow({
    host: '127.0.0.1',
    port: stack.ports.imaps,
    secure: true,
    tls: { ca: readFileSync(stack.ca), servername: 'mail.test' },
    auth: { user: user[0], pass: user[1] },
    logger: false,
  })
  client.on('error', () => undefined)
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.logout().catch(() => undefined)
  }
}

/** Every mail in a folder, with flags and full source. */
export function listMail(user: [string, string], folder = 'INBOX'): Promise<StoredMail[]> {
  return withImap(user, async (client) => {
    const box = await client.mailboxOpen(folder, { readOnly: true })
    if (box.exists === 0) return []
    const messages = await client.fetchAll('1:*', { uid: true, flags: true, envelope: true, source: true })
    return messages.map((m) => ({
      uid: m.uid,
      subject: m.envelope?.subject ?? '',
      flags: [...(m.flags ?? [])],
      source: m.source?.toString('utf8') ?? '',
    }))
  })
}

/** Appends a raw mail to a folder with the given flags (a user's own mail, or a planted stale probe mail). */
export function appendMail(
  user: [string, string],
  raw: string,
  flags: string[] = [],
  folder = 'INBOX',
): Promise<void> {
  return withImap(user, async (client) => {
    await client.append(folder, raw, flags)
  })
}
