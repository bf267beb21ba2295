// Settings: the zod vocabulary of the config (durations, secrets, TLS, auth, the SMTP, POP3 and IMAP
// sections every prober may use, the keys every module has). Probers build their modules from it.
import { isIP } from 'node:net'
import { hostname } from 'node:os'
import { z } from 'zod'
import { parseDuration } from './duration.ts'
import { Secret } from './secret.ts'
import { TLS_VERSIONS } from './protocol/connection.ts'
import { IMAP_MECHANISMS, POP3_MECHANISMS, SMTP_MECHANISMS } from './protocol/sasl.ts'
import { formatTarget, parseTarget, parseTargetRule, quote, type TargetRule } from './targets.ts'
import { OAuth2Schema } from './oauth2/settings.ts'
import { readSettingFile } from './yaml-file.ts'

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
export const duration = durationSchema(false)
/** A duration in seconds where 0s means "off". */
export const durationOrOff = durationSchema(true)

/**
 * CR, LF and NUL end a protocol line (an SMTP or IMAP command, a header) early: in a value that is
 * sent on the wire they would cut the command short or smuggle in another one.
 */
const LINE_BREAK = /[\r\n\0]/
const NO_LINE_BREAK = 'CR, LF and NUL are not allowed: the value is sent in a protocol line'

/** A string that goes into a protocol line: no CR, LF or NUL. */
export function lineText(schema: z.ZodString = z.string().min(1)) {
  return schema.refine((v) => !LINE_BREAK.test(v), NO_LINE_BREAK)
}

/** RFC 5322 3.6.8: a field name is printable US-ASCII except space and colon. */
const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+$/

/**
 * A secret given as `name`, `name_file` or `name_env` (exactly one), resolved at load time.
 * Returns the three optional keys; `resolveSecret` turns them into a Secret.
 */
export function secretKeys<N extends string>(name: N) {
  const opt = z.string().min(1).optional()
  return { [name]: opt, [`${name}_file`]: opt, [`${name}_env`]: opt } as Record<
    N | `${N}_file` | `${N}_env`,
    typeof opt
  >
}

export function resolveSecret(
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

export const TlsConfigSchema = z
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
export const connectionFields = {
  preferred_ip_protocol: IpProtocol.default('ip4'),
  /** Resolve targets with this DNS server (IP, IP:port, [IPv6]:port) instead of the system resolver. */
  dns_server: z
    .string()
    .transform((text, ctx) => {
      const server = parseTarget(text, 53)
      if (typeof server === 'string' || isIP(server.host) === 0) {
        ctx.issues.push({
          code: 'custom',
          input: text,
          message: `dns_server must be an IP address with an optional port (192.0.2.53:53, [2001:db8::53]:53), got ${quote(text)}`,
        })
        return z.NEVER
      }
      return formatTarget(server)
    })
    .optional(),
  /** The local address the probe's connections come from (a machine with several addresses). */
  source_ip_address: z
    .string()
    .refine((a) => isIP(a) !== 0, 'source_ip_address must be an IPv4 or IPv6 address')
    .optional(),
  ip_protocol_fallback: z.boolean().default(true),
  tls_config: TlsConfigSchema.prefault({}),
}

export function authSchema<M extends readonly [string, ...string[]]>(mechanisms: M) {
  return z
    .strictObject({
      username: lineText(),
      ...secretKeys('password'),
      ...secretKeys('oauth2_token'),
      /** Access tokens from a token endpoint (src/oauth2), instead of a fixed oauth2_token. */
      oauth2: z.lazy(() => OAuth2Schema).optional(),
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
      if (oauth2_token !== undefined && raw.oauth2 !== undefined)
        ctx.issues.push({
          code: 'custom',
          input: raw,
          path: ['oauth2'],
          message: 'give oauth2 (tokens from a token endpoint) or oauth2_token (a fixed token), not both',
        })
      const tokens = oauth2_token ?? raw.oauth2
      if (password === undefined && tokens === undefined && ctx.issues.length === 0) {
        ctx.issues.push({
          code: 'custom',
          input: raw,
          path: ['password'],
          message: 'password (or password_file, password_env, oauth2_token..., oauth2) is required',
        })
      }
      const tokenOnly = new Set(['XOAUTH2', 'OAUTHBEARER'])
      const usable = (raw.mechanisms ?? []).filter((m) =>
        tokenOnly.has(m)
          ? (raw.oauth2_token ?? raw.oauth2_token_file ?? raw.oauth2_token_env ?? raw.oauth2)
          : (raw.password ?? raw.password_file ?? raw.password_env),
      )
      if (raw.mechanisms !== undefined && usable.length === 0)
        ctx.issues.push({
          code: 'custom',
          input: raw.mechanisms,
          path: ['mechanisms'],
          message: `none of ${raw.mechanisms.join(', ')} can be used: XOAUTH2 and OAUTHBEARER need an oauth2_token or oauth2, the others a password`,
        })
      return {
        username: raw.username,
        password,
        oauth2_token,
        oauth2: raw.oauth2,
        mechanisms: raw.mechanisms as M[number][] | undefined,
        try_all_mechanisms: raw.try_all_mechanisms,
        allow_plaintext: raw.allow_plaintext,
      }
    })
}

const SmtpAuthSchema = authSchema(SMTP_MECHANISMS)
export type ImapAuth = z.output<ReturnType<typeof authSchema<typeof IMAP_MECHANISMS>>>

const addressList = z
  .union([lineText(), z.array(lineText()).min(1)])
  .transform((v) => (Array.isArray(v) ? v : [v]))

export const SendSchema = z.strictObject({
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

function defaultEhloName(): string {
  const name = hostname()
  return name.includes('.') ? name : 'mailprobe.localdomain'
}

export const SmtpSettingsSchema = z
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

export const Pop3SettingsSchema = z.strictObject({
  tls: z.enum(['none', 'stls', 'stls_opportunistic', 'implicit']).default('stls'),
  ...connectionFields,
  auth: authSchema(POP3_MECHANISMS),
  /** Also run UIDL (and LIST) after STAT. */
  list: z.boolean().default(false),
})
export type Pop3Settings = z.output<typeof Pop3SettingsSchema>

export const ImapSettingsSchema = z.strictObject({
  tls: z.enum(['none', 'starttls', 'starttls_opportunistic', 'implicit']).default('starttls'),
  ...connectionFields,
  auth: authSchema(IMAP_MECHANISMS),
  mailbox: lineText().default('INBOX'),
  /** examine: EXAMINE the mailbox (read-only); status: STATUS without selecting it. */
  mailbox_check: z.enum(['examine', 'status']).default('examine'),
})
export type ImapSettings = z.output<typeof ImapSettingsSchema>

// ---------------------------------------------------------------- keys every module has

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
export const moduleFields = {
  timeout: duration
    .refine((s) => s <= 3600, 'timeout is at most 1h (a probe answers within one scrape)')
    .default(10),
  /** A fixed target: /probe may omit `target`, and any other target is refused. */
  target: z.string().min(1).optional(),
  /** Targets /probe accepts: host, host:port, .domain (any subdomain), IP or CIDR network. */
  allowed_targets: targetRules.optional(),
  /**
   * The least time between two probes of this module and the same target; 0s is off.
   * Default (probers/index.ts withDefaults): 10s for modules that send mail, 1s for other modules that log in, else 0.
   */
  min_interval: durationOrOff.optional(),
  /**
   * After the server (or the token endpoint) refuses the credentials, this module does not log in to that
   * target again for this long: each probe meanwhile repeats the failure (probe_auth_backoff 1). 0s is off.
   */
  auth_backoff: durationOrOff.default(300),
  /** How an `mx:domain` target is probed (modules whose prober speaks to mail exchangers; see src/mx.ts). */
  mx: z
    .strictObject({
      /** `preferred`: one address per host (preferred_ip_protocol, with fallback); `all`: every A and AAAA. */
      addresses: z.enum(['preferred', 'all']).default('preferred'),
      /** The probe succeeds when `all` probed hosts (and addresses) do, or when `any` does. */
      success: z.enum(['all', 'any']).default('all'),
      /** At most this many hosts, addresses per host, and probes at once: DNS answers choose the counts. */
      max_hosts: z.number().int().min(1).max(50).default(10),
      max_addresses: z.number().int().min(1).max(16).default(4),
      max_parallel: z.number().int().min(1).max(32).default(4),
    })
    .optional(),
}

/** The mx section with its defaults (a module without one probes mx: targets so). */
export type MxSettings = NonNullable<z.output<z.ZodObject<typeof moduleFields>>['mx']>

/** The keys every module has, min_interval resolved to seconds (probers/index.ts fills in its default). */
export type ModuleFields = Omit<z.output<z.ZodObject<typeof moduleFields>>, 'min_interval'> & {
  min_interval: number
}

// ---------------------------------------------------------------- what probers declare with these

/** The well-known port of each protocol for its TLS mode: what a target without a port means. */
export const wellKnownPort = {
  smtp: (tls: string) => (tls === 'implicit' ? 465 : 25),
  pop3: (tls: string) => (tls === 'implicit' ? 995 : 110),
  imap: (tls: string) => (tls === 'implicit' ? 993 : 143),
}

/** A protocol section of a module that logs in: where it is in the config, and its TLS and auth. */
export interface CredentialLeg {
  path: string[]
  tls: string
  allowPlaintext: boolean
  /** smtp: a cleartext failure retries over STARTTLS, so tls: none does not send the password in the clear. */
  retriesWithStarttls: boolean
}

/** The section at `path` as a credential leg, when it has auth. */
export function credentialLeg(
  path: string[],
  section: { tls: string; auth?: { allow_plaintext: boolean } | undefined; retry_with_starttls?: boolean },
): CredentialLeg[] {
  if (!section.auth) return []
  return [
    {
      path,
      tls: section.tls,
      allowPlaintext: section.auth.allow_plaintext,
      retriesWithStarttls: section.retry_with_starttls === true,
    },
  ]
}
