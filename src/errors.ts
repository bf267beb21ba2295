// Errors with data: where a probe failed (PhaseError) and what the server said (ProtocolError).

/** A probe step failed; `phase` says which (like got's TimeoutError.event). */
export class PhaseError extends Error {
  override name = 'PhaseError'
  readonly phase: string
  constructor(phase: string, cause: unknown) {
    super(`${phase}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause })
    this.phase = phase
  }
}

/** The server answered, but not as expected; `reply` is its answer (secrets never included). */
export class ProtocolError extends Error {
  override name = 'ProtocolError'
  readonly expected: string
  readonly reply: string
  /** SMTP reply code (e.g. 535); undefined for POP3/IMAP. */
  readonly code: number | undefined
  constructor(expected: string, reply: string, code?: number) {
    super(`expected ${expected}, got "${reply}"`)
    this.expected = expected
    this.reply = reply
    this.code = code
  }
}

/** The probe's deadline passed (the signal aborted). */
export class DeadlineError extends Error {
  override name = 'DeadlineError'
  constructor() {
    super('probe deadline exceeded')
  }
}

/**
 * How a probe failed, as it is reported: the phase (the PhaseError's, else the one the probe was in,
 * else setup), the reason under the PhaseError, and the reason's message.
 */
export function describeFailure(
  err: unknown,
  current: string | undefined,
): { phase: string; reason: unknown; message: string } {
  const phase = findCause(err, PhaseError)?.phase ?? current ?? 'setup'
  const reason = err instanceof PhaseError ? (err.cause ?? err) : err
  return { phase, reason, message: reason instanceof Error ? reason.message : String(reason) }
}

/** Walks the cause chain for the first error of a class. */
export function findCause<T extends Error>(
  err: unknown,
  type: abstract new (...args: never[]) => T,
): T | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 10; e = e.cause, depth++) {
    if (e instanceof type) return e
  }
  return undefined
}
