// The version from package.json (read at run time, from src/ or dist/src/).
import { readFileSync } from 'node:fs'

function findVersion(): string {
  for (const path of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(path, import.meta.url), 'utf8')) as {
        name?: string
        version?: string
      }
      if (pkg.name === 'mailprobe_exporter' && pkg.version) return pkg.version
    } catch {
      // try the next location
    }
  }
  return 'unknown'
}

export const VERSION = findVersion()
