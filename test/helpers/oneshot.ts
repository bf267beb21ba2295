// `mailprobe_exporter probe ...` run as a user would: a child process of src/main.ts through tsx.
import { spawn } from 'node:child_process'
import { ROOT } from './dashboards.ts'

/** Runs the one-shot command with `args`; resolves with its exit status and output. */
export function runProbeCommand(
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', 'probe', ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}
