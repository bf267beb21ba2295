// Throwaway certificates for in-process TLS servers: a CA, and good, expired, wrong-name and self-signed leaves.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface CertSet {
  dir: string
  /** Path of the CA certificate to trust. */
  caFile: string
  ca: Buffer
  /** Leaf for localhost and 127.0.0.1, signed by the CA. */
  good: { cert: Buffer; key: Buffer }
  /** Same names, signed by the CA, expired. */
  expired: { cert: Buffer; key: Buffer }
  /** Signed by the CA, for wrong.example only. */
  wrongName: { cert: Buffer; key: Buffer }
  /** Not signed by the CA. */
  selfSigned: { cert: Buffer; key: Buffer }
}

let cached: CertSet | undefined

function openssl(dir: string, args: string[]) {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' })
}

/** A new key `name.key` and a signing request `name.csr` for CN=`cn`. */
function keyAndRequest(dir: string, name: string, cn: string) {
  const out = ['-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`]
  openssl(dir, ['req', '-new', '-newkey', 'rsa:2048', '-nodes', ...out])
}

export interface LeafOptions {
  /** subjectAltName, e.g. `DNS:localhost,IP:127.0.0.1` */
  san: string
  /** The signing CA's certificate and key files; default `ca.crt` and `ca.key` in `dir`. */
  caCert?: string
  caKey?: string
  usage?: 'serverAuth' | 'clientAuth'
  days?: number
}

/** A leaf `name.crt`/`name.key` in `dir`, signed by a CA; returns the file paths. */
export function signedLeaf(dir: string, name: string, options: LeafOptions) {
  keyAndRequest(dir, name, name)
  writeFileSync(
    join(dir, `${name}.ext`),
    `subjectAltName=${options.san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=${options.usage ?? 'serverAuth'}\n`,
  )
  openssl(dir, [
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    options.caCert ?? 'ca.crt',
    '-CAkey',
    options.caKey ?? 'ca.key',
    '-CAserial',
    `${name}.srl`,
    '-CAcreateserial',
    '-extfile',
    `${name}.ext`,
    '-out',
    `${name}.crt`,
    '-days',
    String(options.days ?? 30),
  ])
  return { certFile: join(dir, `${name}.crt`), keyFile: join(dir, `${name}.key`) }
}

function leaf(dir: string, name: string, san: string) {
  const files = signedLeaf(dir, name, { san })
  return { cert: readFileSync(files.certFile), key: readFileSync(files.keyFile) }
}

/** A self-signed certificate `name.crt`/`name.key` in `dir`, with these extensions. */
function selfSigned(dir: string, name: string, subject: string, extensions: string[]) {
  const out = ['-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '30', '-subj', `/CN=${subject}`]
  openssl(dir, [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    ...out,
    ...extensions.flatMap((e) => ['-addext', e]),
  ])
  return { certFile: join(dir, `${name}.crt`), keyFile: join(dir, `${name}.key`) }
}

/** A self-signed CA `name.crt`/`name.key` in `dir`. */
export function selfSignedCa(dir: string, name: string, subject: string) {
  return selfSigned(dir, name, subject, [
    'basicConstraints=critical,CA:TRUE',
    'keyUsage=critical,keyCertSign,cRLSign',
  ])
}

/** A CA-signed leaf that expired yesterday (`openssl ca` takes explicit dates; OpenSSL 3.0's x509 does not). */
function expiredLeaf(dir: string) {
  const stamp = (daysAgo: number) =>
    new Date(Date.now() - daysAgo * 86400_000).toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z'
  writeFileSync(join(dir, 'index.txt'), '')
  writeFileSync(join(dir, 'serial'), '1000\n')
  writeFileSync(
    join(dir, 'ca.cnf'),
    [
      '[ca]',
      'default_ca = test',
      '[test]',
      `dir = ${dir}`,
      'database = $dir/index.txt',
      'serial = $dir/serial',
      'new_certs_dir = $dir',
      'certificate = $dir/ca.crt',
      'private_key = $dir/ca.key',
      'default_md = sha256',
      'policy = any',
      'copy_extensions = none',
      'x509_extensions = ext',
      '[any]',
      'commonName = supplied',
      '[ext]',
      'subjectAltName = DNS:localhost,IP:127.0.0.1',
      'basicConstraints = CA:FALSE',
      '',
    ].join('\n'),
  )
  keyAndRequest(dir, 'expired', 'localhost')
  openssl(dir, [
    'ca',
    '-batch',
    '-config',
    'ca.cnf',
    '-in',
    'expired.csr',
    '-out',
    'expired.crt',
    '-startdate',
    stamp(30),
    '-enddate',
    stamp(1),
  ])
  return { cert: readFileSync(join(dir, 'expired.crt')), key: readFileSync(join(dir, 'expired.key')) }
}

export function certs(): CertSet {
  if (cached) return cached
  const dir = mkdtempSync(join(tmpdir(), 'mailprobe-certs-'))
  selfSignedCa(dir, 'ca', 'mailprobe test CA')
  const good = leaf(dir, 'good', 'DNS:localhost,IP:127.0.0.1')
  const expired = expiredLeaf(dir)
  const wrongName = leaf(dir, 'wrong', 'DNS:wrong.example')
  selfSigned(dir, 'self', 'localhost', ['subjectAltName=DNS:localhost,IP:127.0.0.1'])
  const selfSignedLeaf = {
    cert: readFileSync(join(dir, 'self.crt')),
    key: readFileSync(join(dir, 'self.key')),
  }
  cached = {
    dir,
    caFile: join(dir, 'ca.crt'),
    ca: readFileSync(join(dir, 'ca.crt')),
    good,
    expired,
    wrongName,
    selfSigned: selfSignedLeaf,
  }
  return cached
}

const leaves = new Map<string, { cert: Buffer; key: Buffer }>()

/** A leaf for `name` only (DNS:name), signed by the test CA of certs(); made once per name. */
export function leafFor(name: string): { cert: Buffer; key: Buffer } {
  let made = leaves.get(name)
  if (!made) {
    made = leaf(certs().dir, name, `DNS:${name}`)
    leaves.set(name, made)
  }
  return made
}
