// YAML files checked by a zod schema: every problem reported as file:line:col: key path: message.
import { LineCounter, parseDocument, isCollection, isMap, isScalar, type Node as YamlNode } from 'yaml'
import type { z } from 'zod'

export class ConfigError extends Error {
  override name = 'ConfigError'
  readonly problems: string[]
  constructor(file: string, problems: string[]) {
    super(`${file}: invalid config\n  ${problems.join('\n  ')}`)
    this.problems = problems
  }
}

/** The YAML node a zod issue path points at; for an unknown key, the key itself. */
function locate(doc: ReturnType<typeof parseDocument>, path: PropertyKey[], unknownKey?: string) {
  let node: unknown = doc.contents
  for (const key of path) {
    if (!isCollection(node)) break
    const next: unknown = node.get(key, true)
    // a missing key (or one that came in through a merge key): point at the map that should hold it
    if (next === undefined || next === null) break
    node = next
  }
  if (unknownKey !== undefined && isMap(node)) {
    const pair = node.items.find((p) => isScalar(p.key) && p.key.value === unknownKey)
    if (pair && isScalar(pair.key)) return pair.key
  }
  return node as YamlNode | null
}

/** Parses YAML (merge keys `<<: *base` allowed, duplicate keys not) and checks it against `schema`. */
export function parseYamlFile<S extends z.ZodType>(text: string, file: string, schema: S): z.output<S> {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, merge: true })
  const where = (offset: number | undefined) => {
    if (offset === undefined) return file
    const { line, col } = lineCounter.linePos(offset)
    return `${file}:${line}:${col}`
  }
  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => {
        const near = /^[^:\s]+/.exec(text.slice(e.pos[0]))?.[0]
        const message = e.message.split('\n')[0] ?? e.code
        return `${where(e.pos[0])}: ${message}${near && e.code === 'DUPLICATE_KEY' ? `: "${near}"` : ''}`
      }),
    )
  }
  const result = schema.safeParse(doc.toJS() ?? {})
  if (result.success) return result.data
  const problems = result.error.issues.map((issue) => {
    const unknown = issue.code === 'unrecognized_keys' ? issue.keys : [undefined]
    return unknown
      .map((key) => {
        const node = locate(doc, issue.path, key)
        const keyPath = [...issue.path, ...(key === undefined ? [] : [key])].map(String).join('.')
        const message = key === undefined ? issue.message : `unknown key "${key}"`
        return `${where(node?.range?.[0])}: ${keyPath || '(top level)'}: ${message}`
      })
      .join('\n  ')
  })
  throw new ConfigError(file, problems)
}
