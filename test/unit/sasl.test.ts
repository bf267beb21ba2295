// SASL client computations against the RFCs' own test vectors, and the mechanism choice.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { b64, chooseMechanisms, cramMd5Response, ScramClient, unb64 } from '../../src/protocol/sasl.ts'

test('SCRAM-SHA-1: the exchange of RFC 5802 section 5', async () => {
  const client = new ScramClient('SCRAM-SHA-1', 'user', 'pencil', 'fyko+d2lbbFgONRv9qkxdawL')
  assert.equal(unb64(client.first()), 'n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL')
  const final = await client.final(
    b64('r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096'),
  )
  assert.equal(
    unb64(final),
    'c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=',
  )
  client.verify(b64('v=rmF9pqV8S7suAoZWja4dJRkFsKQ='))
  assert.throws(() => client.verify(b64('v=AAAAAAAAAAAAAAAAAAAAAAAAAAA=')), /server signature does not match/)
})

test('SCRAM-SHA-256: the exchange of RFC 7677 section 3', async () => {
  const client = new ScramClient('SCRAM-SHA-256', 'user', 'pencil', 'rOprNGfwEbeRWgbNEkqO')
  const final = await client.final(
    b64('r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096'),
  )
  assert.equal(
    unb64(final),
    'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
  )
  client.verify(b64('v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4='))
})

test('SCRAM: a server nonce that does not extend ours, or an absurd iteration count, is refused', async () => {
  const client = new ScramClient('SCRAM-SHA-256', 'user', 'pencil', 'abc')
  await assert.rejects(client.final(b64('r=xyz,s=c2FsdA==,i=4096')), /malformed server-first-message/)
  // The server chooses the work; 2^31 iterations would block the event loop for minutes.
  await assert.rejects(
    client.final(b64('r=abcdef,s=c2FsdA==,i=2147483647')),
    /asks for 2147483647 iterations/,
  )
  assert.throws(() => client.verify(b64('e=invalid-proof')), /server error invalid-proof/)
})

test('SCRAM: "=" and "," in the user name are escaped (RFC 5802 5.1)', () => {
  assert.equal(unb64(new ScramClient('SCRAM-SHA-1', 'a=b,c', 'p', 'n').first()), 'n,,n=a=3Db=2Cc,r=n')
})

test('CRAM-MD5: the example of RFC 2195', () => {
  const challenge = b64('<1896.697170952@postoffice.reston.mci.net>')
  assert.equal(
    unb64(cramMd5Response('tim', 'tanstaaftanstaaf', challenge)),
    'tim b913a602c7eda7a495b4e6e7334d3890',
  )
})

test('mechanism choice: strongest common by default, configured order otherwise, credentials respected', () => {
  const implemented = ['SCRAM-SHA-256', 'CRAM-MD5', 'XOAUTH2', 'PLAIN', 'LOGIN'] as const
  const password = { password: 'x' }
  assert.deepEqual(chooseMechanisms(password, ['plain', 'LOGIN', 'CRAM-MD5'], implemented).order, [
    'CRAM-MD5',
    'PLAIN',
    'LOGIN',
  ])
  assert.deepEqual(
    chooseMechanisms(
      { ...password, mechanisms: ['LOGIN', 'PLAIN'] },
      ['PLAIN', 'LOGIN', 'CRAM-MD5'],
      implemented,
    ).order,
    ['LOGIN', 'PLAIN'],
  )
  assert.deepEqual(
    chooseMechanisms(password, ['XOAUTH2', 'PLAIN'], implemented).order,
    ['PLAIN'],
    'no token: no XOAUTH2',
  )
  assert.deepEqual(chooseMechanisms({ oauth2_token: 't' }, ['XOAUTH2', 'PLAIN'], implemented).order, [
    'XOAUTH2',
  ])
  const none = chooseMechanisms(password, ['GSSAPI'], implemented)
  assert.deepEqual(none.order, [])
  assert.match(none.reason ?? '', /server offers GSSAPI, we would use SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN/)
})
