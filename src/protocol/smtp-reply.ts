// SMTP replies: code, enhanced status code, queue id, EHLO extensions. Pure functions, tested with strings.

export interface SmtpReply {
  code: number
  /** RFC 3463 enhanced status code, e.g. "2.0.0". */
  enhanced: string | undefined
  text: string
}

/** Parses a (possibly multi-line, \n-joined) reply; undefined when it does not start with a code. */
export function parseReply(reply: string): SmtpReply | undefined {
  const lines = reply.split(/\r?\n/).filter((l) => l !== '')
  const last = lines[lines.length - 1] ?? ''
  const m = /^(\d{3})(?:[ -](.*))?$/.exec(last)
  if (!m) return undefined
  const text = m[2] ?? ''
  const enhanced = /^([245]\.\d{1,3}\.\d{1,3})\b/.exec(text)?.[1]
  return { code: Number(m[1]), enhanced, text }
}

/** The queue id in a final DATA reply ("250 2.0.0 Ok: queued as 4Xy1Z2", Exim "id=1abc-..."). */
export function queueId(text: string): string | undefined {
  return (
    /queued as ([A-Za-z0-9._-]+)/i.exec(text)?.[1] ??
    /\bid=([A-Za-z0-9._-]+)/i.exec(text)?.[1] ??
    /^(?:[245]\.\d+\.\d+ )?(?:OK|Ok) <?([A-Za-z0-9._@-]{6,})>?/.exec(text)?.[1]
  )
}

/** EHLO keywords (first word of each line after the greeting line), upper-cased, e.g. ["PIPELINING", "AUTH", "STARTTLS"]. */
export function ehloExtensions(reply: string): { keyword: string; params: string }[] {
  return reply
    .split(/\r?\n/)
    .slice(1)
    .map((line) => line.replace(/^\d{3}[ -]/, '').trim())
    .filter((line) => line !== '')
    .map((line) => {
      const [keyword = '', ...rest] = line.split(/[\s=]+/)
      return { keyword: keyword.toUpperCase(), params: rest.join(' ') }
    })
}

/** AUTH mechanisms from EHLO (both "AUTH X Y" and the old "AUTH=X Y" form). */
export function authMechanisms(reply: string): string[] {
  const mechanisms = ehloExtensions(reply)
    .filter((e) => e.keyword === 'AUTH')
    .flatMap((e) => e.params.split(/\s+/))
    .filter((m) => m !== '')
    .map((m) => m.toUpperCase())
  return [...new Set(mechanisms)]
}
