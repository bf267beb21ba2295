// YAML files checked by a zod schema: every problem reported as file:line:col: key path: message.
import {
  LineCounter,
  parseDocument,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  type Node as YamlNode,
  type Pair,
  type YAMLMap,
  visit,
} from 'yaml'
import { readFileSync } from 'node:fs'
import type { z } from 'zod'
import { quote } from './targets.ts'

export class ConfigError extends Error {
  override name = 'ConfigError'
  readonly problems: string[]
  constructor(file: string, problems: string[]) {
    super(`${file}: invalid config\n  ${problems.join('\n  ')}`)
    this.problems = problems
  }
}

type Doc = ReturnType<typeof parseDocument>

const isMergeKey = (key: unknown) => isScalar(key) && (typeof key.value === 'symbol' || key.source === '<<')

/** The node itself, or what an alias (`*base`) points at. */
function deref(doc: Doc, node: unknown): unknown {
  return isAlias(node) ? node.resolve(doc) : node
}

/**
 * The pair holding `key` in `map`, looking through merge keys as YAML merges them: the map's own
 * keys first, then each merged map (`<<: *base`, `<<: [*a, *b]`) in order, recursively. `via` is the
 * merge key it came through, if any.
 */
function findPair(
  doc: Doc,
  map: YAMLMap,
  key: PropertyKey,
  seen = new Set<YAMLMap>(),
): { pair: Pair; via?: Pair } | undefined {
  if (seen.has(map)) return undefined
  seen.add(map)
  const own = map.items.find(
    (p) => !isMergeKey(p.key) && isScalar(p.key) && String(p.key.value) === String(key),
  )
  if (own) return { pair: own }
  for (const merge of map.items) {
    if (!isMergeKey(merge.key)) continue
    const value = deref(doc, merge.value)
    for (const source of isSeq(value) ? value.items.map((item) => deref(doc, item)) : [value]) {
      const found = isMap(source) ? findPair(doc, source, key, seen) : undefined
      if (found) return { pair: found.pair, via: merge }
    }
  }
  return undefined
}

/**
 * The YAML node a zod issue path points at, following aliases and merge keys, so that a problem in
 * shared settings points at the line where they are written; `mergedAt` is the first merge key
 * (`<<:`) on the way, which says where this module took them in. With `atKey`, the last key itself
 * rather than its value (an unknown key, a bad header name). A missing key: the map that should hold it.
 */
function locate(
  doc: Doc,
  path: readonly PropertyKey[],
  atKey = false,
): { node: YamlNode | null; mergedAt: YamlNode | undefined } {
  let node: unknown = deref(doc, doc.contents)
  let mergedAt: YamlNode | undefined
  for (const [i, key] of path.entries()) {
    let next: unknown
    if (isMap(node)) {
      const found = findPair(doc, node, key)
      mergedAt ??= found?.via?.key as YamlNode | undefined
      if (found && atKey && i === path.length - 1) return { node: found.pair.key as YamlNode, mergedAt }
      next = found?.pair.value
    } else if (isSeq(node)) {
      next = node.get(key, true)
    }
    next = deref(doc, next)
    if (next === undefined || next === null) break
    node = next
  }
  return { node: node as YamlNode | null, mergedAt }
}

/** A key path segment as text; any other key than a plain word or index is JSON-quoted, control characters escaped. */
function pathSegment(key: PropertyKey): string {
  const text = String(key)
  return /^[A-Za-z0-9_-]+$/.test(text) ? text : quote(text)
}

/** The first alias without its anchor, or merge key whose value is not a map (or maps), if any. */
function badAliasOrMerge(doc: Doc): YamlNode | undefined {
  let bad: YamlNode | undefined
  visit(doc, {
    Alias(_, alias) {
      if (alias.resolve(doc) !== undefined) return undefined
      bad = alias
      return visit.BREAK
    },
    Pair(_, pair) {
      if (!isMergeKey(pair.key)) return undefined
      const value = deref(doc, pair.value)
      const sources = isSeq(value) ? value.items.map((item) => deref(doc, item)) : [value]
      if (sources.every((source) => isMap(source))) return undefined
      bad = (pair.value ?? pair.key) as YamlNode
      return visit.BREAK
    },
  })
  return bad
}

/** Parses YAML (merge keys `<<: *base` allowed, duplicate keys not) and checks it against `schema`. */
export function parseYamlFile<S extends z.ZodType>(text: string, file: string, schema: S): z.output<S> {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, merge: true })
  const position = (offset: number) => {
    const { line, col } = lineCounter.linePos(offset)
    return `${line}:${col}`
  }
  const where = (offset: number | undefined) => (offset === undefined ? file : `${file}:${position(offset)}`)
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
  let data: unknown
  try {
    data = doc.toJS() ?? {}
  } catch (err) {
    // Bad merge sources (`<<: 5`), aliases without an anchor, alias bombs: yaml throws while building.
    throw new ConfigError(file, [`${where(badAliasOrMerge(doc)?.range?.[0])}: ${(err as Error).message}`])
  }
  const result = schema.safeParse(data)
  if (result.success) return result.data
  const problems = result.error.issues.flatMap((issue) => {
    const unknown = issue.code === 'unrecognized_keys' ? issue.keys : [undefined]
    // A rule may ask for the key rather than its value: `params: { locate: 'key' }` (a bad header name).
    const atKey =
      issue.code === 'custom' && (issue.params as { locate?: unknown } | undefined)?.locate === 'key'
    return unknown.map((key) => {
      const { node, mergedAt } =
        key === undefined ? locate(doc, issue.path, atKey) : locate(doc, [...issue.path, key], true)
      const keyPath = [...issue.path, ...(key === undefined ? [] : [key])].map(pathSegment).join('.')
      const message = key === undefined ? issue.message : `unknown key ${quote(key)}`
      const merged = mergedAt?.range ? ` (merged in with <<: at ${position(mergedAt.range[0])})` : ''
      return `${where(node?.range?.[0])}: ${keyPath || '(top level)'}: ${message}${merged}`
    })
  })
  throw new ConfigError(file, problems)
}

/** Reads a YAML file and checks it against `schema`; a file that cannot be read is a ConfigError too. */
export function loadYamlFile<S extends z.ZodType>(file: string, schema: S): z.output<S> {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(file, [`${file}: cannot read: ${(err as Error).message}`])
  }
  return parseYamlFile(text, file, schema)
}

/** A file named by a setting (a certificate, a key, a password file), read inside a zod transform. */
export function readSettingFile(path: string, ctx: z.RefinementCtx, key: string): Buffer | undefined {
  try {
    return readFileSync(path)
  } catch (err) {
    ctx.issues.push({
      code: 'custom',
      input: path,
      path: [key],
      message: `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
    })
    return undefined
  }
}
