// Config: the modules, each checked by its prober's schema (probers/index.ts), loaded from YAML with
// errors that name file, line and key.
import { z } from 'zod'
import { defaultPort, ModuleSchema, type Module } from './probers/index.ts'
import { ConfigError, loadYamlFile, parseYamlFile } from './yaml-file.ts'

export { ConfigError, defaultPort, type Module }
export type ImapModule = Extract<Module, { prober: 'imap' }>

const ConfigSchema = z.strictObject({
  modules: z.record(
    z.string().regex(/^[A-Za-z0-9_.-]+$/, 'module names use A-Z a-z 0-9 _ . -'),
    ModuleSchema,
  ),
})
export type Config = z.output<typeof ConfigSchema>

export function parseConfig(text: string, file: string): Config {
  return parseYamlFile(text, file, ConfigSchema)
}

export function loadConfig(file: string): Config {
  return loadYamlFile(file, ConfigSchema)
}

/**
 * The module as JSON for /config and ?debug=true: secrets print as <secret>, file contents are left
 * out, and so is what the exporter derived from the config at load (the parsed targets).
 */
export function redactModule(module: Module): unknown {
  return JSON.parse(
    JSON.stringify(module, (key, value: unknown) => {
      if (key === 'fixed_target' || key === 'endpoint') return undefined
      return ['ca', 'cert', 'key'].includes(key) && value !== undefined ? '<file contents>' : value
    }),
  )
}
