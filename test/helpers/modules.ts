// Module YAML for unit tests against scripted servers.

/** A sync round-trip module: SMTP without TLS to the probe's target, the receiving leg on `receivePort`. */
export function roundtripModule(
  receivePort: number,
  options: { protocol?: 'imap' | 'pop3'; timeout?: string | undefined; extra?: string[] | undefined } = {},
) {
  const protocol = options.protocol ?? 'imap'
  return `
prober: roundtrip
timeout: ${options.timeout ?? '3s'}
allowed_targets: [127.0.0.1]
roundtrip:
  poll_interval: 50ms
  cleanup_reserve: 500ms
  smtp:
    tls: none
    send: { from: probe@mx.test, to: probe@mx.test }
  receive:
    protocol: ${protocol}
    target: 127.0.0.1:${receivePort}
    ${protocol}:
      tls: none
      auth: { username: probe@mx.test, password: s3cr3t-pw, allow_plaintext: true }
  ${(options.extra ?? []).join('\n  ')}`
}
