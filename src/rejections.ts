// Refused /probe requests: the status, the text that says why, and the reason they are counted by.

/** Why a /probe request was refused: the `reason` label of mailprobe_exporter_probe_requests_rejected_total. */
export type RejectReason =
  | 'bad_parameter'
  | 'missing_module'
  | 'unknown_module'
  | 'missing_target'
  | 'invalid_target'
  | 'target_not_allowed'
  | 'bad_scrape_timeout'
  | 'rate_limited'
  | 'overloaded'
  | 'method_not_allowed'
  | 'shutting_down'

export const REJECT_REASONS: readonly RejectReason[] = [
  'bad_parameter',
  'missing_module',
  'unknown_module',
  'missing_target',
  'invalid_target',
  'target_not_allowed',
  'bad_scrape_timeout',
  'rate_limited',
  'overloaded',
  'method_not_allowed',
  'shutting_down',
]

export interface Rejection {
  status: 400 | 403 | 405 | 429 | 503
  contentType: string
  body: string
  reason: RejectReason
  /** Seconds, for Retry-After. */
  retryAfter?: number
}

const TEXT = 'text/plain; charset=utf-8'

export function reject(
  status: Rejection['status'],
  reason: RejectReason,
  body: string,
  retryAfter?: number,
): Rejection {
  return {
    status,
    contentType: TEXT,
    body: body.endsWith('\n') ? body : body + '\n',
    reason,
    ...(retryAfter === undefined ? {} : { retryAfter }),
  }
}
