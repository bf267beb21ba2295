// A tiny authoritative DNS server over UDP for unit tests: A, AAAA and MX answers from a table, NXDOMAIN
// for other names, and every question it was asked.
import { createSocket } from 'node:dgram'
import { isIPv6 } from 'node:net'
import type { TestContext } from 'node:test'

export interface DnsServer {
  /** 127.0.0.1:port, as dns_server takes it. */
  address: string
  /** Every question, as "name TYPE". */
  questions: string[]
}

const TYPES: Record<number, 'A' | 'AAAA' | 'MX'> = { 1: 'A', 28: 'AAAA', 15: 'MX' }

/** A mail exchanger record; exchange '.' is a null MX (RFC 7505). */
export interface MxRecord {
  preference: number
  exchange: string
}

export interface DnsRecords {
  A?: string[]
  AAAA?: string[]
  MX?: MxRecord[]
}

/** A name in wire format (no compression). */
function wireName(name: string): Buffer {
  const labels = name === '.' ? [] : name.replace(/\.$/, '').split('.')
  return Buffer.concat([
    ...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'ascii')])),
    Buffer.from([0]),
  ])
}

function rdata(type: 'A' | 'AAAA' | 'MX', value: string | MxRecord): Buffer {
  if (typeof value !== 'string') {
    const preference = Buffer.alloc(2)
    preference.writeUInt16BE(value.preference, 0)
    return Buffer.concat([preference, wireName(value.exchange)])
  }
  return type === 'AAAA' || isIPv6(value) ? ipv6Bytes(value) : Buffer.from(value.split('.').map(Number))
}

const TYPE_CODES = { A: 1, AAAA: 28, MX: 15 } as const

function ipv6Bytes(address: string): Buffer {
  const [head = '', tail = ''] = address.split('::')
  const parts = (s: string) => (s === '' ? [] : s.split(':'))
  const groups = [
    ...parts(head),
    ...Array<string>(8 - parts(head).length - parts(tail).length).fill('0'),
    ...parts(tail),
  ]
  return Buffer.from(groups.flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff]))
}

export async function dnsServer(t: TestContext, records: Record<string, DnsRecords>): Promise<DnsServer> {
  const socket = createSocket('udp4')
  const questions: string[] = []
  socket.on('message', (query, peer) => {
    const labels: string[] = []
    let at = 12
    while (at < query.length && query[at] !== 0) {
      const length = query[at] ?? 0
      labels.push(query.subarray(at + 1, at + 1 + length).toString('ascii'))
      at += 1 + length
    }
    const questionEnd = at + 5
    const type = TYPES[query.readUInt16BE(at + 1)]
    const name = labels.join('.').toLowerCase()
    questions.push(`${name} ${type ?? query.readUInt16BE(at + 1)}`)
    const entry = records[name]
    const values: (string | MxRecord)[] = entry && type ? (entry[type] ?? []) : []
    const answers = values.map((value) => {
      const data = rdata(type ?? 'A', value)
      const rr = Buffer.alloc(12)
      rr.writeUInt16BE(0xc00c, 0) // the name: a pointer to the question's
      rr.writeUInt16BE(TYPE_CODES[type ?? 'A'], 2)
      rr.writeUInt16BE(1, 4) // IN
      rr.writeUInt32BE(60, 6)
      rr.writeUInt16BE(data.length, 10)
      return Buffer.concat([rr, data])
    })
    const header = Buffer.alloc(12)
    header.writeUInt16BE(query.readUInt16BE(0), 0)
    header.writeUInt16BE(0x8580 | (entry ? 0 : 3), 2) // QR, AA, RD, RA; NXDOMAIN for unknown names
    header.writeUInt16BE(1, 4)
    header.writeUInt16BE(answers.length, 6)
    socket.send(Buffer.concat([header, query.subarray(12, questionEnd), ...answers]), peer.port, peer.address)
  })
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve))
  t.after(() => socket.close())
  return { address: `127.0.0.1:${socket.address().port}`, questions }
}
