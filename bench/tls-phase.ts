// The timing goal for STARTTLS: the `tls` phase after STARTTLS/STLS is the handshake alone, so it must take
// what the same handshake with the same server takes on implicit TLS (within 1 ms when nothing stalls).
// The server must be ready when the connection comes (see bench/ready-dovecot.ts): what it does before it
// reads anything lands in `banner` before STARTTLS but in `tls` with implicit TLS, where the client speaks first.
import type { Sample } from '../test/helpers/metrics.ts'
import { quantile } from './stats.ts'

/** One protocol's two modules: the same server, certificate and TLS settings, reached by STARTTLS and implicitly. */
export interface TlsPhasePair {
  protocol: 'smtp' | 'imap' | 'pop3'
  starttls: { module: string; target: string }
  implicit: { module: string; target: string }
}

/** Medians of one module's probes, ms. */
export interface GreetingPhases {
  tls: number
  banner: number
}

export interface TlsPhaseResult {
  protocol: TlsPhasePair['protocol']
  /** Probes of each module. */
  probes: number
  starttls: GreetingPhases
  implicit: GreetingPhases
  /** starttls.tls − implicit.tls. */
  differenceMs: number
}

/** One phase of one successful probe, in ms (probe_<protocol>_duration_seconds{phase}). */
function phaseMs(samples: Sample[], protocol: TlsPhasePair['protocol'], phase: string): number {
  const sample = samples.find(
    (s) => s.name === `probe_${protocol}_duration_seconds` && s.labels['phase'] === phase,
  )
  if (!sample) throw new Error(`no ${phase} phase in the ${protocol} probe's answer`)
  return sample.value * 1000
}

function medians(probes: { tls: number; banner: number }[]): GreetingPhases {
  return {
    tls: quantile(
      probes.map((p) => p.tls),
      0.5,
    ),
    banner: quantile(
      probes.map((p) => p.banner),
      0.5,
    ),
  }
}

/**
 * `runs` probes of each module of each pair, the two modules in turn (so that background load hits both
 * alike), after a few warm-up probes; `probe` answers one /probe's samples and throws when it failed.
 */
export async function measureTlsPhases(
  pairs: readonly TlsPhasePair[],
  runs: number,
  probe: (module: string, target: string) => Promise<Sample[]>,
): Promise<TlsPhaseResult[]> {
  const results: TlsPhaseResult[] = []
  for (const pair of pairs) {
    for (let i = 0; i < 5; i++) {
      await probe(pair.starttls.module, pair.starttls.target)
      await probe(pair.implicit.module, pair.implicit.target)
    }
    const phases = async ({ module, target }: TlsPhasePair['starttls']) => {
      const samples = await probe(module, target)
      return {
        tls: phaseMs(samples, pair.protocol, 'tls'),
        banner: phaseMs(samples, pair.protocol, 'banner'),
      }
    }
    const starttls: { tls: number; banner: number }[] = []
    const implicit: { tls: number; banner: number }[] = []
    for (let i = 0; i < runs; i++) {
      starttls.push(await phases(pair.starttls))
      implicit.push(await phases(pair.implicit))
    }
    const result = {
      protocol: pair.protocol,
      probes: runs,
      starttls: medians(starttls),
      implicit: medians(implicit),
    }
    results.push({ ...result, differenceMs: result.starttls.tls - result.implicit.tls })
  }
  return results
}
