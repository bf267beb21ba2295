// The round trip's own settings: the SMTP leg, the receiving leg, and what deferred mode remembers.
import { z } from 'zod'
import {
  duration,
  ImapSettingsSchema,
  lineText,
  Pop3SettingsSchema,
  SmtpSettingsSchema,
  wellKnownPort,
} from '../../settings.ts'
import { parseTarget, type Target } from '../../targets.ts'

export const RoundtripSettingsSchema = z
  .strictObject({
    mode: z.enum(['sync', 'deferred']).default('sync'),
    /** The SMTP leg; the probe's target is the SMTP server. `send` is required. */
    smtp: SmtpSettingsSchema,
    /** The receiving leg: a fixed mailbox server. */
    receive: z.strictObject({
      protocol: z.enum(['imap', 'pop3']),
      target: z.string().min(1),
      imap: ImapSettingsSchema.optional(),
      pop3: Pop3SettingsSchema.optional(),
    }),
    /** Deferred mode: a mail not found after this long counts as lost. */
    lost_after: duration.default(600),
    /** Probe mails (with our marker) older than this are deleted and counted as swept. */
    sweep_after: duration.default(3600),
    /** How often to look again when the server cannot push (no IDLE, or POP3). */
    poll_interval: duration
      .refine((s) => s >= 0.01, 'poll_interval is at least 10ms (a tighter loop only loads the server)')
      .default(1),
    /** Time kept back from the deadline for deleting the mail and logging out. */
    cleanup_reserve: duration.default(1),
    /** POP3: how many of the newest messages to scan with TOP. */
    // At most 1000: the probe mail is among the newest few, and every scanned message costs work on
    // each poll (POP3: one TOP command each; IMAP: its headers in the FETCH, which must also stay
    // within the IMAP session's budget of 2000 untagged lines per command). 1000 already takes a
    // good part of a second per poll, so a larger window would only load the mailbox server.
    scan_limit: z
      .number()
      .int()
      .positive()
      .max(1000, 'scan_limit is at most 1000 (each poll reads that many messages)')
      .default(100),
    /** IMAP: also look in the junk folder (\Junk special-use, then these names). */
    junk_folders: z.array(lineText()).default(['Junk', 'Spam', 'Junk E-mail', 'Junk Email']),
    /** Deferred mode: where in-flight mails are remembered across restarts. */
    state_file: z.string().min(1).optional(),
  })
  // Checks first (their problems do not stop the module's own checks, so every problem is reported).
  .superRefine((r, ctx) => {
    const issue = (path: string[], message: string) => ctx.addIssue({ code: 'custom', path, message })
    if (r.smtp.send === undefined) issue(['smtp', 'send'], 'a round trip needs smtp.send (from, to)')
    const leg = r.receive.protocol
    const endpoint = receiveEndpoint(r.receive)
    if (typeof endpoint === 'string') issue(['receive', 'target'], endpoint)
    if (r.receive[leg] === undefined)
      issue(['receive', leg], `receive.protocol is ${leg}: receive.${leg} (with auth) is required`)
    if (r.mode === 'deferred' && r.state_file === undefined)
      issue(['state_file'], 'mode: deferred needs state_file')
    // lost_after counts only in deferred mode (a sync probe fails at its deadline instead).
    if (r.mode === 'deferred' && r.sweep_after < r.lost_after)
      issue(
        ['sweep_after'],
        `sweep_after (${r.sweep_after}s) must not be shorter than lost_after (${r.lost_after}s): a mail still awaited would be deleted before it could be found or counted as lost`,
      )
  })
  // Then, for a valid section only, the receive target parsed once, at load.
  .transform((r) => {
    const endpoint = receiveEndpoint(r.receive)
    return typeof endpoint === 'string' ? z.NEVER : { ...r, receive: { ...r.receive, endpoint } }
  })

/** The receiving leg's target, with the default port of its protocol and TLS mode; a string says what is wrong. */
function receiveEndpoint(receive: {
  protocol: 'imap' | 'pop3'
  target: string
  imap?: { tls: string } | undefined
  pop3?: { tls: string } | undefined
}): Target | string {
  const leg = receive.protocol
  return parseTarget(receive.target, wellKnownPort[leg](receive[leg]?.tls ?? ''))
}

export type RoundtripSettings = z.output<typeof RoundtripSettingsSchema>
