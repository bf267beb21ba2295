// The one credential policy: when credentials may be sent, which mechanisms, and the try-each loop.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  CredentialPolicyError,
  checkTransport,
  planLogin,
  tryMechanisms,
} from '../../src/dialogues/credentials.ts'
import { ProtocolError } from '../../src/errors.ts'
import { silentLogger } from '../../src/logger.ts'
import { Secret } from '../../src/secret.ts'
import { SMTP_MECHANISMS } from '../../src/protocol/sasl.ts'

const auth = (extra: Partial<Parameters<typeof planLogin>[0]> = {}) => ({
  username: 'u',
  password: new Secret('p'),
  try_all_mechanisms: false,
  allow_plaintext: false,
  ...extra,
})

const refusal = (fn: () => unknown) => {
  try {
    fn()
  } catch (err) {
    assert.ok(err instanceof CredentialPolicyError, String(err))
    return [err.reason, err.message]
  }
  assert.fail('no refusal')
}

test('credentials: only over TLS that verified, or in the clear with allow_plaintext', () => {
  const plain = { secure: false, verified: false }
  const unverified = { secure: true, verified: false }
  const good = { secure: true, verified: true }
  assert.deepEqual(
    refusal(() => checkTransport(plain, auth())),
    ['plaintext', 'refusing to send credentials without TLS (set auth.allow_plaintext to allow it)'],
  )
  assert.deepEqual(
    refusal(() => checkTransport(unverified, auth({ allow_plaintext: true }))),
    ['unverified', 'refusing to send credentials over TLS whose certificate did not verify'],
  )
  checkTransport(good, auth())
  checkTransport(plain, auth({ allow_plaintext: true }))
})

test('credentials: planLogin picks the strongest in common, or all with try_all_mechanisms, or says why none', () => {
  const good = { secure: true, verified: true }
  const offered = ['PLAIN', 'LOGIN', 'SCRAM-SHA-256', 'CRAM-MD5']
  assert.deepEqual(planLogin(auth(), good, offered, SMTP_MECHANISMS), ['SCRAM-SHA-256'])
  assert.deepEqual(planLogin(auth({ try_all_mechanisms: true }), good, offered, SMTP_MECHANISMS), [
    'SCRAM-SHA-256',
    'CRAM-MD5',
    'PLAIN',
    'LOGIN',
  ])
  assert.deepEqual(planLogin(auth({ mechanisms: ['LOGIN', 'PLAIN'] }), good, offered, SMTP_MECHANISMS), [
    'LOGIN',
  ])
  const [reason, message] = refusal(() => planLogin(auth(), good, ['XOAUTH2'], SMTP_MECHANISMS))
  assert.equal(reason, 'no_mechanism')
  assert.match(String(message), /no usable mechanism in common: server offers XOAUTH2/)
  assert.equal(
    refusal(() => planLogin(auth(), { secure: false, verified: false }, offered, SMTP_MECHANISMS))[0],
    'plaintext',
  )
})

test('credentials: tryMechanisms moves on after a refusal, stops when the connection is gone', async () => {
  const tried: string[] = []
  const used = await tryMechanisms(
    ['A', 'B', 'C'],
    (m) => {
      tried.push(m)
      return m === 'B' ? Promise.resolve() : Promise.reject(new ProtocolError('235', '535 no'))
    },
    silentLogger,
  )
  assert.deepEqual([used, tried], ['B', ['A', 'B']])

  const gone: string[] = []
  await assert.rejects(
    tryMechanisms(
      ['A', 'B'],
      (m) => {
        gone.push(m)
        return Promise.reject(new Error('socket closed'))
      },
      silentLogger,
    ),
    /socket closed/,
  )
  assert.deepEqual(gone, ['A'], 'no second try on a dead connection')
  await assert.rejects(
    tryMechanisms(['A'], () => Promise.reject(new ProtocolError('235', '535 bad')), silentLogger),
    ProtocolError,
  )
})
