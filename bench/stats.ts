// Figures of a benchmark run: quantiles of a sample, and a process's CPU time and resident memory from /proc.
import { readFileSync } from 'node:fs'

/** The q-quantile (0..1) of values, nearest rank; NaN for none. */
export const quantile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN
}

/** utime + stime of a process, in seconds. */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
  return (Number(fields[11]) + Number(fields[12])) / 100 // clock ticks (USER_HZ = 100)
}

/**
 * A process's resident memory, MiB: VmRSS, and its two parts, RssAnon (its own: heaps, stacks) and RssFile
 * (pages of mapped files, the program's code above all, shared with other processes running it and given
 * back to the page cache under pressure).
 */
export interface Resident {
  rss: number
  anon: number
  file: number
}

export function resident(pid: number): Resident {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kB = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) / 1024
  return { rss: kB('VmRSS'), anon: kB('RssAnon'), file: kB('RssFile') }
}

/** VmRSS of a process, in MiB. */
export const rssMiB = (pid: number): number => resident(pid).rss
