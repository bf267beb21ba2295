// The `oauth2:` config section (Prometheus' oauth2 keys where they overlap, plus grant and refresh_token),
// checked fully at load and turned into the OAuth2Config a TokenSource takes.
//
// settings.ts and this file may end up importing each other (authSchema gets an `oauth2` key): nothing here
// touches a value of settings.ts while the module loads, only inside z.lazy and transforms, which run
// at parse time. On the other side, write `oauth2: z.lazy(() => OAuth2Schema).optional()`.
import { z } from 'zod'
import { resolveSecret, secretKeys, TlsConfigSchema } from '../settings.ts'
import { quote } from '../targets.ts'
import type { OAuth2Config } from './token-source.ts'

const CONTROL = /\p{Cc}/u

// ---------------------------------------------------------------- the section

/** RFC 6749 3.3 scope-token: printable ASCII except space, `"` and `\`. */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/
/** Form fields the source writes itself; endpoint_params may not replace them. */
const RESERVED_PARAMS = ['grant_type', 'client_id', 'client_secret', 'scope', 'refresh_token']

/** Why `text` is no token_url, or undefined. https only: the client secret and refresh token go to it. */
function tokenUrlProblem(text: string): string | undefined {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    return `token_url ${quote(text)} is not a URL`
  }
  // Checked first, so that the message never quotes a password.
  if (url.username !== '' || url.password !== '') return 'token_url must not contain a user name or password'
  if (url.protocol !== 'https:')
    return `token_url must be an https:// URL (the client secret is sent to it), got ${quote(text)}`
  if (url.hash !== '') return 'token_url must not have a #fragment'
  return undefined
}

export const OAuth2Schema = z
  .strictObject({
    token_url: z.string().min(1),
    client_id: z
      .string()
      .min(1)
      .refine((v) => !CONTROL.test(v), 'client_id must not contain control characters'),
    ...secretKeys('client_secret'),
    scopes: z
      .array(
        z
          .string()
          .regex(
            SCOPE_TOKEN,
            'a scope is printable ASCII without spaces, quotes or backslashes (one per list entry)',
          ),
      )
      .default([]),
    /** Extra form fields sent with every token request (audience, resource, ...). */
    endpoint_params: z.record(z.string().min(1), z.string()).default({}),
    grant: z.enum(['client_credentials', 'refresh_token']).default('client_credentials'),
    ...secretKeys('refresh_token'),
    /** How to reach the token endpoint (a private CA, a client certificate); the certificate always verifies. */
    tls_config: z.lazy(() => TlsConfigSchema).optional(),
    /** Where a rotated refresh token is kept across restarts (grant refresh_token); else in memory only. */
    state_file: z.string().min(1).optional(),
  })
  .transform((raw, ctx): OAuth2Config => {
    const urlProblem = tokenUrlProblem(raw.token_url)
    if (urlProblem !== undefined)
      ctx.issues.push({ code: 'custom', input: raw.token_url, path: ['token_url'], message: urlProblem })
    // A public client (grant refresh_token, no secret) is allowed; client_credentials needs one.
    const client_secret = resolveSecret(raw, 'client_secret', ctx, raw.grant === 'client_credentials')
    const refresh_token = resolveSecret(raw, 'refresh_token', ctx, raw.grant === 'refresh_token')
    if (raw.grant === 'client_credentials' && refresh_token !== undefined)
      ctx.issues.push({
        code: 'custom',
        input: raw,
        path: ['refresh_token'],
        message: 'refresh_token is only used with grant: refresh_token',
      })
    for (const key of Object.keys(raw.endpoint_params))
      if (RESERVED_PARAMS.includes(key))
        ctx.issues.push({
          code: 'custom',
          input: key,
          path: ['endpoint_params', key],
          params: { locate: 'key' },
          message: `endpoint_params cannot set ${key}: it comes from ${key === 'grant_type' ? 'grant' : key === 'scope' ? 'scopes' : key}`,
        })
    if (raw.tls_config?.insecure_skip_verify === true)
      ctx.issues.push({
        code: 'custom',
        input: true,
        path: ['tls_config', 'insecure_skip_verify'],
        message: 'the token endpoint is sent the client secret: its certificate must verify (use ca_file)',
      })
    return {
      token_url: raw.token_url,
      client_id: raw.client_id,
      client_secret,
      scopes: raw.scopes,
      endpoint_params: raw.endpoint_params,
      grant: raw.grant,
      refresh_token,
      tls_config: raw.tls_config,
      state_file: raw.state_file,
    }
  })
export type OAuth2Settings = z.output<typeof OAuth2Schema>
