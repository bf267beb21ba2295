// The real Postfix + Dovecot + dnsmasq started by scripts/with-mailstack.sh (ports, CA, users, DNS, MX hosts).
import { join } from 'node:path'

/** One MX host of `mx.domain`: its Postfix service listens on ports.smtp at every address. */
export interface MxHost {
  /** The MX exchange, its banner and EHLO name (`220 <name> ESMTP mailprobe test`), its certificate's only SAN. */
  name: string
  preference: number
  /** Its A records, then its AAAA records, as the stack's DNS serves them. */
  addresses: string[]
  /** Signed by `ca` either way; false: expired (valid 2020-01-01 to 2020-01-02 only). */
  certValid: boolean
}

export interface MailStack {
  dir: string
  ca: string
  ports: {
    smtp: number
    submission: number
    smtps: number
    imap: number
    imaps: number
    pop3: number
    pop3s: number
    /** dnsmasq, UDP and TCP, on 127.0.0.1. */
    dns: number
  }
  /**
   * The stack's DNS server as `host:port` (for `Resolver.setServers`). It answers only from the
   * records of `mx` (and `mail.test A 127.0.0.1`) and never forwards: every other name is NXDOMAIN.
   */
  dns: string
  mx: {
    /** MX records for `hosts`; its own A record is 127.0.0.1. */
    domain: string
    /** In preference order. */
    hosts: MxHost[]
    /** No MX record, one A record (RFC 5321 implicit MX): `fallbackAddress`, i.e. the stack's own mail.test. */
    fallbackDomain: string
    fallbackAddress: string
    /** One MX record, preference 0, exchange "." (RFC 7505 null MX); no other records. */
    nullMxDomain: string
  }
  users: { probe: [string, string]; alice: [string, string]; spam: [string, string] }
  /** Accepted by Postfix and silently discarded. */
  voidAddress: string
  /**
   * Dovecot's oauth2 passdb (XOAUTH2 and OAUTHBEARER only, on IMAP, POP3 and submission): it asks an RFC 7662
   * endpoint about every token, `POST https://127.0.0.1:<introspectionPort>/introspect`, and wants
   * `active: true` and `username` equal to the user the client names. The stack does not serve it: a test
   * starts `tokenEndpoint(t, { port: introspectionPort, tls })`; while none runs, OAuth logins fail.
   */
  oauth2: {
    introspectionPort: number
    /** Has a mailbox, logs in by bearer token only (no password works). */
    user: string
    /** The certificate (IP:127.0.0.1, DNS:localhost) and key the endpoint serves, and `ca`, the only CA Dovecot trusts there. */
    tls: { certFile: string; keyFile: string; caFile: string }
  }
}

/** The running stack; throws (never skips) when the tests were started without it. */
export function mailStack(): MailStack {
  const dir = process.env['MAILSTACK_DIR']
  if (!dir)
    throw new Error('MAILSTACK_DIR is not set: run integration tests through `npm run test:integration`')
  const base = Number(process.env['MAILSTACK_PORT_BASE'] ?? '10000')
  return {
    dir,
    ca: join(dir, 'tls', 'ca.crt'),
    ports: {
      smtp: base + 25,
      submission: base + 587,
      smtps: base + 465,
      imap: base + 143,
      imaps: base + 993,
      pop3: base + 110,
      pop3s: base + 995,
      dns: base + 53,
    },
    dns: `127.0.0.1:${base + 53}`,
    mx: {
      domain: 'mail.test',
      hosts: [
        { name: 'mx1.mail.test', preference: 10, addresses: ['127.0.0.2', '::1'], certValid: true },
        { name: 'mx2.mail.test', preference: 20, addresses: ['127.0.0.3'], certValid: false },
      ],
      fallbackDomain: 'fallback.test',
      fallbackAddress: '127.0.0.1',
      nullMxDomain: 'nullmx.test',
    },
    users: {
      probe: ['probe@mail.test', 'probe-secret'],
      alice: ['alice@mail.test', 'alice-secret'],
      spam: ['spam@mail.test', 'spam-secret'],
    },
    voidAddress: 'void@mail.test',
    oauth2: {
      introspectionPort: base + 443,
      user: 'oauth@mail.test',
      tls: {
        certFile: join(dir, 'tls', 'oauth2.crt'),
        keyFile: join(dir, 'tls', 'oauth2.key'),
        caFile: join(dir, 'tls', 'ca.crt'),
      },
    },
  }
}
