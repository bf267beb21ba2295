// Config: zod schemas for every module kind, loaded from YAML with errors that name file, line and key.
import { hostname } from 'node:os'
import { z } from 'zod'
import { parseDuration } from './duration.ts'
import { Secret } from './secret.ts'
import { TLS_VERSIONS } from './protocol/connection.ts'
import { IMAP_MECHANISMS, POP3_MECHANISMS, SMTP_MECHANISMS } from './protocol/sasl.ts'
import { parseTarget, parseTargetRule, quote, type TargetRule } from './targets.ts'
import { ConfigError, loadYamlFile, parseYamlFile, readSettingFile } from './yaml-file.ts'

// ---------------------------------------------------------------- building blocks

function durationSchema(zeroAllowed: boolean) {
  return z.union([z.number().nonnegative(), z.string()]).transform((value, ctx) => {
    const seconds = typeof value === 'number' ? value : parseDuration(value)
    if (seconds === undefined || (seconds === 0 && !zeroAllowed)) {
      ctx.issues.push({
        code: 'custom',
        input: value,
        message: `${quote(String(value))} is not a duration (e.g. 500ms, 10s, 5m)`,
      })
      return z.NEVER
    }
    return seconds
  })
}
/** A positive duration in seconds. */
const duration = durationSchema(false)
/** A duration in seconds where 0s means "off". */
const durationOrOff = durationSchema(true)

/**
 * CR, LF and NUL end a protocol line (an SMTP or IMAP command, a header) early: in a value that is
 * sent on the wire they would cut the command short or smuggle in another one.
 */
const LINE_BREAK = /[\r\n\0]/
const NO_LINE_BREAK = 'CR, LF and NUL are not allowed: the value is sent in a protocol line'

/** A string that goes into a protocol line: no CR, LF or NUL. */
function lineText(schema: z.ZodString = z.string().min(1)) {
  return schema.refine((v) => !LINE_BREAK.test(v), NO_LINE_BREAK)
}

/** RFC 5322 3.6.8: a field name is printable US-ASCII except space and colon. */
const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+$/

/**
 * A secret given as `name`, `name_file` or `name_env` (exactly one), resolved at load time.
 * Returns the three optional keys; `resolveSecret` turns them into a Secret.
 */
function secretKeys<N extends string>(name: N) {
  const opt = z.string().min(1).optional()
  return { [name]: opt, [`${name}_file`]: opt, [`${name}_env`]: opt } as Record<
    N | `${N}_file` | `${N}_env`,
    typeof opt
  >
}

function resolveSecret(
  raw: Record<string, unknown>,
  name: string,
  ctx: z.RefinementCtx,
  required: boolean,
): Secret | undefined {
  const given = [name, `${name}_file`, `${name}_env`].filter((k) => raw[k] !== undefined)
  if (given.length > 1) {
    ctx.issues.push({
      code: 'custom',
      input: raw,
      path: [given[1] ?? name],
      message: `give only one of ${given.join(', ')}`,
    })
    return undefined
  }
  const key = given[0]
  if (key === undefined) {
    if (required)
      ctx.issues.push({
        code: 'custom',
        input: raw,
        path: [name],
        message: `${name}, ${name}_file or ${name}_env is required`,
      })
    return undefined
  }
  const value = raw[key] as string
  let secret: string
  let from: string
  let note = ''
  if (key === name) {
    secret = value
    from = `the ${name}`
  } else if (key.endsWith('_file')) {
    const content = readSettingFile(value, ctx, key)
    if (content === undefined) return undefined
    secret = content.toString('utf8').replace(/\r?\n$/, '')
    from = `the ${name} in ${value}`
    note = ' (only one trailing newline is dropped)'
  } else {
    const env = process.env[value]
    if (env === undefined || env === '') {
      ctx.issues.push({
        code: 'custom',
        input: value,
        path: [key],
        message: `environment variable ${value} is not set`,
      })
      return undefined
    }
    secret = env
    from = `environment variable ${value}`
  }
  // Never echo the value: the message names where it came from only.
  if (LINE_BREAK.test(secret)) {
    ctx.issues.push({
      code: 'custom',
      input: key,
      path: [key],
      message: `${from} contains CR, LF or NUL, which would break the protocol line it is sent in${note}`,
    })
    return undefined
  }
  return new Secret(secret)
}

const TlsVersion = z.enum(TLS_VERSIONS)

const TlsConfigSchema = z
  .strictObject({
    ca_file: z.string().min(1).optional(),
    cert_file: z.string().min(1).optional(),
    key_file: z.string().min(1).optional(),
    server_name: z.string().min(1).optional(),
    min_version: TlsVersion.optional(),
    max_version: TlsVersion.optional(),
    insecure_skip_verify: z.boolean().default(false),
  })
  .transform((raw, ctx) => {
    if (
      raw.min_version !== undefined &&
      raw.max_version !== undefined &&
      TlsVersion.options.indexOf(raw.min_version) > TlsVersion.options.indexOf(raw.max_version)
    )
      ctx.issues.push({
        code: 'custom',
        input: raw.max_version,
        path: ['max_version'],
        message: `max_version (${raw.max_version}) is below min_version (${raw.min_version})`,
      })
    if ((raw.cert_file === undefined) !== (raw.key_file === undefined)) {
      ctx.issues.push({
        code: 'custom',
        input: raw,
        path: [raw.cert_file === undefined ? 'cert_file' : 'key_file'],
        message: 'cert_file and key_file go together',
      })
    }
    return {
      ca: raw.ca_file === undefined ? undefined : readSettingFile(raw.ca_file, ctx, 'ca_file'),
      cert: raw.cert_file === undefined ? undefined : readSettingFile(raw.cert_file, ctx, 'cert_file'),
      key: raw.key_file === undefined ? undefined : readSettingFile(raw.key_file, ctx, 'key_file'),
      ca_file: raw.ca_file,
      cert_file: raw.cert_file,
      key_file: raw.key_file,
      server_name: raw.server_name,
      min_version: raw.min_version,
      max_version: raw.max_version,
      insecure_skip_verify: raw.insecure_skip_verify,
    }
  })

const IpProtocol = z.enum(['ip4', 'ip6'])

/** Fields every protocol section shares: address family, TLS. */
const connectionFields = {
  preferred_ip_protocol: IpProtocol.default('ip4'),
  ip_protocol_fallback: z.boolean().default(true),
  tls_config: TlsConfigSchema.prefault({}),
}

function authSchema<M extends readonly [string, ...string[]]>(mechanisms: M) {
  return z
    .strictObject({
      username: lineText(),
      ...secretKeys('password'),
      ...secretKeys('oauth2_token'),
      /** Preference order; default: the strongest both sides support. */
      mechanisms: z.array(z.enum(mechanisms)).min(1).optional(),
      /** Try each advertised mechanism in turn until one works. */
      try_all_mechanisms: z.boolean().default(false),
      /** Allow credentials over a connection without TLS. */
      allow_plaintext: z.boolean().default(false),
    })
    .transform((raw, ctx) => {
      const password = resolveSecret(raw, 'password', ctx, false)
      const oauth2_token = resolveSecret(raw, 'oauth2_token', ctx, false)
      if (password === undefined && oauth2_token === undefined && ctx.issues.length === 0) {
        ctx.issues.push({
          code: 'custom',
          input: raw,
          path: ['password'],
          message: 'password (or password_file, password_env, oauth2_token...) is required',
        })
      }
      const tokenOnly = new Set(['XOAUTH2', 'OAUTHBEARER'])
      const usable = (raw.mechanisms ?? []).filter((m) =>
        tokenOnly.has(m)
          ? (raw.oauth2_token ?? raw.oauth2_token_file ?? raw.oauth2_token_env)
          : (raw.password ?? raw.password_file ?? raw.password_env),
      )
      if (raw.mechanisms !== undefined && usable.length === 0)
        ctx.issues.push({
          code: 'custom',
          input: raw.mechanisms,
          path: ['mechanisms'],
          message: `none of ${raw.mechanisms.join(', ')} can be used: XOAUTH2 and OAUTHBEARER need an oauth2_token, the others a password`,
        })
      return {
        username: raw.username,
        password,
        oauth2_token,
        mechanisms: raw.mechanisms as M[number][] | undefined,
        try_all_mechanisms: raw.try_all_mechanisms,
        allow_plaintext: raw.allow_plaintext,
      }
    })
}

const SmtpAuthSchema = authSchema(SMTP_MECHANISMS)
export type SmtpAuth = z.output<typeof SmtpAuthSchema>
export type Pop3Auth = z.output<ReturnType<typeof authSchema<typeof POP3_MECHANISMS>>>
export type ImapAuth = z.output<ReturnType<typeof authSchema<typeof IMAP_MECHANISMS>>>

const addressList = z
  .union([lineText(), z.array(lineText()).min(1)])
  .transform((v) => (Array.isArray(v) ? v : [v]))

const SendSchema = z.strictObject({
  from: lineText(),
  to: addressList,
  /** The unique id of each mail is appended to this subject. */
  subject: lineText(z.string()).default('mailprobe test'),
  headers: z
    .record(z.string(), z.string())
    .superRefine((headers, ctx) => {
      for (const [name, value] of Object.entries(headers)) {
        if (!FIELD_NAME.test(name))
          ctx.addIssue({
            code: 'custom',
            path: [name],
            params: { locate: 'key' },
            message: `header name ${quote(name)} is not an RFC 5322 field name (printable ASCII without space and colon)`,
          })
        if (LINE_BREAK.test(value)) ctx.addIssue({ code: 'custom', path: [name], message: NO_LINE_BREAK })
      }
    })
    .default({}),
  /** May have line breaks: it is the body. */
  body: z.string().default('This is a test mail sent by mailprobe_exporter. It can be deleted.\n'),
})
export type SendConfig = z.output<typeof SendSchema>

function defaultEhloName(): string {
  const name = hostname()
  return name.includes('.') ? name : 'mailprobe.localdomain'
}

const SmtpSettingsSchema = z
  .strictObject({
    tls: z.enum(['none', 'starttls', 'starttls_opportunistic', 'implicit']).default('starttls'),
    ...connectionFields,
    ehlo: lineText().default(defaultEhloName),
    auth: SmtpAuthSchema.optional(),
    /** When AUTH fails (or is not offered) on a cleartext connection, reconnect with STARTTLS and try again. */
    retry_with_starttls: z.boolean().default(false),
    /** Let MAIL, RCPT and DATA share one round trip when the server offers PIPELINING. */
    pipelining: z.boolean().default(false),
    send: SendSchema.optional(),
  })
  .superRefine((s, ctx) => {
    if (s.retry_with_starttls && s.tls !== 'none' && s.tls !== 'starttls_opportunistic')
      ctx.addIssue({
        code: 'custom',
        path: ['retry_with_starttls'],
        message: `retry_with_starttls needs tls: none or starttls_opportunistic (tls is ${s.tls})`,
      })
    if (s.retry_with_starttls && s.auth === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['retry_with_starttls'],
        message: 'retry_with_starttls needs auth',
      })
  })
export type SmtpSettings = z.output<typeof SmtpSettingsSchema>

const Pop3SettingsSchema = z.strictObject({
  tls: z.enum(['none', 'stls', 'stls_opportunistic', 'implicit']).default('stls'),
  ...connectionFields,
  auth: authSchema(POP3_MECHANISMS),
  /** Also run UIDL (and LIST) after STAT. */
  list: z.boolean().default(false),
})
export type Pop3Settings = z.output<typeof Pop3SettingsSchema>

const ImapSettingsSchema = z.strictObject({
  tls: z.enum(['none', 'starttls', 'starttls_opportunistic', 'implicit']).default('starttls'),
  ...connectionFields,
  auth: authSchema(IMAP_MECHANISMS),
  mailbox: lineText().default('INBOX'),
  /** examine: EXAMINE the mailbox (read-only); status: STATUS without selecting it. */
  mailbox_check: z.enum(['examine', 'status']).default('examine'),
})
export type ImapSettings = z.output<typeof ImapSettingsSchema>

const RoundtripSettingsSchema = z
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
  .superRefine((r, ctx) => {
    if (r.smtp.send === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['smtp', 'send'],
        message: 'a round trip needs smtp.send (from, to)',
      })
    const leg = r.receive.protocol
    const receiveTls = r.receive[leg]?.tls
    const receivePort =
      leg === 'imap' ? (receiveTls === 'implicit' ? 993 : 143) : receiveTls === 'implicit' ? 995 : 110
    const receiveTarget = parseTarget(r.receive.target, receivePort)
    if (typeof receiveTarget === 'string')
      ctx.addIssue({ code: 'custom', path: ['receive', 'target'], message: receiveTarget })
    if (r.receive[leg] === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['receive', leg],
        message: `receive.protocol is ${leg}: receive.${leg} (with auth) is required`,
      })
    if (r.mode === 'deferred' && r.state_file === undefined)
      ctx.addIssue({ code: 'custom', path: ['state_file'], message: 'mode: deferred needs state_file' })
    // lost_after counts only in deferred mode (a sync probe fails at its deadline instead).
    if (r.mode === 'deferred' && r.sweep_after < r.lost_after)
      ctx.addIssue({
        code: 'custom',
        path: ['sweep_after'],
        message: `sweep_after (${r.sweep_after}s) must not be shorter than lost_after (${r.lost_after}s): a mail still awaited would be deleted before it could be found or counted as lost`,
      })
  })
export type RoundtripSettings = z.output<typeof RoundtripSettingsSchema>

// ---------------------------------------------------------------- modules

const targetRules = z
  .array(z.string().min(1))
  .min(1, 'allowed_targets needs at least one entry')
  .transform((rules, ctx) => {
    const parsed: TargetRule[] = []
    rules.forEach((text, i) => {
      const rule = parseTargetRule(text)
      if (typeof rule === 'string') ctx.issues.push({ code: 'custom', input: text, path: [i], message: rule })
      else parsed.push(rule)
    })
    return parsed
  })

/** Keys every module has, whatever its prober. */
const moduleFields = {
  timeout: duration
    .refine((s) => s <= 3600, 'timeout is at most 1h (a probe answers within one scrape)')
    .default(10),
  /** A fixed target: /probe may omit `target`, and any other target is refused. */
  target: z.string().min(1).optional(),
  /** Targets /probe accepts: host, host:port, .domain (any subdomain), IP or CIDR network. */
  allowed_targets: targetRules.optional(),
  /**
   * The least time between two probes of this module and the same target; 0s is off.
   * Default (see withMinInterval): 10s for modules that send mail, 1s for other modules that log in, else 0.
   */
  min_interval: durationOrOff.optional(),
}

const SmtpModuleSchema = z.strictObject({
  prober: z.literal('smtp'),
  ...moduleFields,
  smtp: SmtpSettingsSchema.prefault({}),
})
const Pop3ModuleSchema = z.strictObject({
  prober: z.literal('pop3'),
  ...moduleFields,
  pop3: Pop3SettingsSchema,
})
const ImapModuleSchema = z.strictObject({
  prober: z.literal('imap'),
  ...moduleFields,
  imap: ImapSettingsSchema,
})
const RoundtripModuleSchema = z.strictObject({
  prober: z.literal('roundtrip'),
  ...moduleFields,
  roundtrip: RoundtripSettingsSchema,
})

type AnyModule = z.output<
  typeof SmtpModuleSchema | typeof Pop3ModuleSchema | typeof ImapModuleSchema | typeof RoundtripModuleSchema
>

/** Each protocol section of a module that logs in, with its path in the config. */
function legsWithAuth(
  m: AnyModule,
): [string[], { tls: string; auth: { allow_plaintext: boolean }; retry_with_starttls?: boolean }][] {
  const legs: [
    string[],
    { tls: string; auth?: { allow_plaintext: boolean } | undefined; retry_with_starttls?: boolean },
  ][] = []
  switch (m.prober) {
    case 'smtp':
      legs.push([['smtp'], m.smtp])
      break
    case 'pop3':
      legs.push([['pop3'], m.pop3])
      break
    case 'imap':
      legs.push([['imap'], m.imap])
      break
    case 'roundtrip':
      legs.push([['roundtrip', 'smtp'], m.roundtrip.smtp])
      if (m.roundtrip.receive.imap) legs.push([['roundtrip', 'receive', 'imap'], m.roundtrip.receive.imap])
      if (m.roundtrip.receive.pop3) legs.push([['roundtrip', 'receive', 'pop3'], m.roundtrip.receive.pop3])
  }
  return legs.flatMap(([path, leg]) => (leg.auth ? [[path, { ...leg, auth: leg.auth }]] : []))
}

/** The port a bare host means for this module (the protocol's well-known port for its TLS mode). */
export function defaultPort(module: AnyModule): number {
  switch (module.prober) {
    case 'smtp':
      return module.smtp.tls === 'implicit' ? 465 : 25
    case 'pop3':
      return module.pop3.tls === 'implicit' ? 995 : 110
    case 'imap':
      return module.imap.tls === 'implicit' ? 993 : 143
    case 'roundtrip':
      return module.roundtrip.smtp.tls === 'implicit' ? 465 : 25
  }
}

/** Whether a probe of this module sends a mail (smtp with `send`, every round trip). */
function sendsMail(m: AnyModule): boolean {
  return m.prober === 'roundtrip' || (m.prober === 'smtp' && m.smtp.send !== undefined)
}

/** The module with min_interval in seconds: as configured, else by what a probe does. */
function withMinInterval<M extends AnyModule>(m: M): M & { min_interval: number } {
  const fallback = sendsMail(m) ? 10 : legsWithAuth(m).length > 0 ? 1 : 0
  return { ...m, min_interval: m.min_interval ?? fallback }
}

const ModuleSchema = z
  .discriminatedUnion('prober', [SmtpModuleSchema, Pop3ModuleSchema, ImapModuleSchema, RoundtripModuleSchema])
  .superRefine((m, ctx) => {
    const unrestricted = m.target === undefined && m.allowed_targets === undefined
    if (unrestricted && sendsMail(m))
      ctx.addIssue({
        code: 'custom',
        path: ['allowed_targets'],
        message:
          'this module sends mail: restrict where with `target` or `allowed_targets`, ' +
          'otherwise anyone who can reach the exporter can make it send mail anywhere',
      })
    else if (unrestricted && legsWithAuth(m).length > 0)
      ctx.addIssue({
        code: 'custom',
        path: ['allowed_targets'],
        message:
          'this module sends credentials: restrict where with `target` or `allowed_targets`, ' +
          'so that nobody can make the exporter send them to a host of their choosing',
      })
    if (m.target !== undefined) {
      // A fixed target is the module's only allowed target: it must parse, or nothing would be checked.
      const parsed = parseTarget(m.target, defaultPort(m))
      if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', path: ['target'], message: parsed })
      if (m.allowed_targets !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['allowed_targets'],
          message: 'give `target` (one fixed target) or `allowed_targets`, not both',
        })
    }
    for (const [path, leg] of legsWithAuth(m))
      if (
        leg.tls === 'none' &&
        !leg.auth.allow_plaintext &&
        !('retry_with_starttls' in leg && leg.retry_with_starttls)
      )
        ctx.addIssue({
          code: 'custom',
          path: [...path, 'tls'],
          message:
            'tls: none would send the password in the clear: set auth.allow_plaintext: true to allow that',
        })
    if (m.prober === 'roundtrip' && m.roundtrip.cleanup_reserve >= m.timeout)
      ctx.addIssue({
        code: 'custom',
        path: ['roundtrip', 'cleanup_reserve'],
        message: `cleanup_reserve (${m.roundtrip.cleanup_reserve}s) must be less than the timeout (${m.timeout}s)`,
      })
  })
  .transform(withMinInterval)

export type Module = z.output<typeof ModuleSchema>
export type SmtpModule = Extract<Module, { prober: 'smtp' }>
export type Pop3Module = Extract<Module, { prober: 'pop3' }>
export type ImapModule = Extract<Module, { prober: 'imap' }>
export type RoundtripModule = Extract<Module, { prober: 'roundtrip' }>

const ConfigSchema = z.strictObject({
  modules: z.record(
    z.string().regex(/^[A-Za-z0-9_.-]+$/, 'module names use A-Z a-z 0-9 _ . -'),
    ModuleSchema,
  ),
})
export type Config = z.output<typeof ConfigSchema>

// ---------------------------------------------------------------- loading

export { ConfigError }

export function parseConfig(text: string, file: string): Config {
  return parseYamlFile(text, file, ConfigSchema)
}

export function loadConfig(file: string): Config {
  return loadYamlFile(file, ConfigSchema)
}

/** The module as JSON for /config and ?debug=true: secrets print as <secret>, file contents are left out. */
export function redactModule(module: Module): unknown {
  return JSON.parse(
    JSON.stringify(module, (key, value: unknown) =>
      ['ca', 'cert', 'key'].includes(key) && value !== undefined ? '<file contents>' : value,
    ),
  )
}
