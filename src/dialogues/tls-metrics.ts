// TLS facts with blackbox_exporter's names, so existing certificate panels and alerts work unchanged.
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls'
import type { Registry } from 'prom-client'
import { setGauge, setInfo, type Labels, legGauge } from '../metrics.ts'
import { peerCertificate } from '../protocol/connection.ts'

const PROBE_TLS_VERSION_INFO = legGauge(
  'probe_tls_version_info',
  'Returns the TLS version used or NaN when unknown',
  ['version'],
)
const PROBE_TLS_CIPHER_INFO = legGauge(
  'probe_tls_cipher_info',
  'Returns the TLS cipher negotiated during handshake',
  ['cipher'],
)
const PROBE_SSL_EARLIEST_CERT_EXPIRY = legGauge(
  'probe_ssl_earliest_cert_expiry',
  'Returns last SSL chain expiry in unixtime',
)
const PROBE_SSL_LAST_CHAIN_EXPIRY_TIMESTAMP_SECONDS = legGauge(
  'probe_ssl_last_chain_expiry_timestamp_seconds',
  'Returns last SSL chain expiry in timestamp',
)
const PROBE_SSL_LAST_CHAIN_INFO = legGauge(
  'probe_ssl_last_chain_info',
  'Contains SSL leaf certificate information',
  ['fingerprint_sha256', 'subject', 'issuer', 'subjectalternative', 'serialnumber'],
)

/** TLS facts (blackbox_exporter names). */
export const TLS_METRICS = [
  PROBE_TLS_VERSION_INFO,
  PROBE_TLS_CIPHER_INFO,
  PROBE_SSL_EARLIEST_CERT_EXPIRY,
  PROBE_SSL_LAST_CHAIN_EXPIRY_TIMESTAMP_SECONDS,
  PROBE_SSL_LAST_CHAIN_INFO,
]

/** Node's "TLSv1.3" as Go's tls.VersionName: "TLS 1.3". */
export function tlsVersionName(protocol: string | null): string {
  if (protocol === null) return 'unknown'
  return protocol.replace(
    /^TLSv(\d)(?:\.(\d))?$/,
    (_m, major: string, minor?: string) => `TLS ${major}.${minor ?? '0'}`,
  )
}

/** The presented chain, leaf first, stopping at a self-signed root (which points at itself). */
export function peerChain(socket: TLSSocket): DetailedPeerCertificate[] {
  const chain: DetailedPeerCertificate[] = []
  const seen = new Set<string>()
  let cert: DetailedPeerCertificate | undefined = peerCertificate(socket)
  while (cert && Object.keys(cert).length > 0 && !seen.has(cert.fingerprint256)) {
    seen.add(cert.fingerprint256)
    chain.push(cert)
    // Typed as always present, but undefined (or {}) where the presented chain ends.
    const issuer: DetailedPeerCertificate | undefined = (
      cert as { issuerCertificate?: DetailedPeerCertificate }
    ).issuerCertificate
    cert = issuer
  }
  return chain
}

function dn(fields: Record<string, string | string[] | undefined> | undefined): string {
  if (!fields) return ''
  return Object.entries(fields)
    .flatMap(([k, v]) =>
      Array.isArray(v) ? v.map((x) => `${k}=${x}`) : v === undefined ? [] : [`${k}=${v}`],
    )
    .join(',')
}

export function recordTlsMetrics(socket: TLSSocket, registry: Registry, labels: Labels = {}): void {
  const chain = peerChain(socket)
  const expiries = chain.map((c) => Date.parse(c.valid_to) / 1000)
  const leaf = chain[0]
  setInfo(registry, PROBE_TLS_VERSION_INFO, [{ version: tlsVersionName(socket.getProtocol()) }], labels)
  const cipher = socket.getCipher() as { standardName?: string; name: string }
  setInfo(registry, PROBE_TLS_CIPHER_INFO, [{ cipher: cipher.standardName ?? cipher.name }], labels)
  if (!leaf) return
  setGauge(registry, PROBE_SSL_EARLIEST_CERT_EXPIRY, Math.min(...expiries), labels)
  if (socket.authorized) {
    // The verified chain is the presented one here (Node builds one chain); its weakest link expires first.
    setGauge(registry, PROBE_SSL_LAST_CHAIN_EXPIRY_TIMESTAMP_SECONDS, Math.min(...expiries), labels)
  }
  setInfo(
    registry,
    PROBE_SSL_LAST_CHAIN_INFO,
    [
      {
        fingerprint_sha256: leaf.fingerprint256.replaceAll(':', '').toLowerCase(),
        subject: dn(leaf.subject),
        issuer: dn(leaf.issuer),
        subjectalternative: (leaf.subjectaltname ?? '')
          .replace(/(?:DNS|IP Address):/g, '')
          .split(', ')
          .filter(Boolean)
          .join(','),
        serialnumber: leaf.serialNumber.toLowerCase(),
      },
    ],
    labels,
  )
}
