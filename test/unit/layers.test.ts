// The layers (docs/ARCHITECTURE.md): protocol below dialogues below probers; a prober never imports
// another; the protocol layer knows nothing of the config or the probers.
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { test } from 'node:test'
import { ROOT } from '../helpers/dashboards.ts'

const SRC = join(ROOT, 'src')

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  )
}

/** Each file's relative imports (type-only ones too), as paths under src/. */
const imports = new Map(
  files(SRC).map((file) => {
    const text = readFileSync(file, 'utf8')
    const targets = [...text.matchAll(/^(?:import|export)\b[^;]*?from '(\.[^']+)'/gms)].map((m) =>
      relative(SRC, resolve(dirname(file), m[1] ?? '')),
    )
    return [relative(SRC, file), targets]
  }),
)

const under = (dir: string) => [...imports.entries()].filter(([file]) => file.startsWith(`${dir}/`))

test('layers: the protocol layer imports neither dialogues, probers, the prober seam nor the config', () => {
  assert.ok(under('protocol').length > 5)
  for (const [file, targets] of under('protocol'))
    for (const target of targets)
      assert.ok(
        !/^(dialogues|probers)\//.test(target) && !['prober.ts', 'config.ts', 'settings.ts'].includes(target),
        `${file} imports ${target}`,
      )
})

test('layers: dialogues import no prober', () => {
  for (const [file, targets] of under('dialogues'))
    for (const target of targets) assert.ok(!target.startsWith('probers/'), `${file} imports ${target}`)
})

test('layers: no prober imports another, and only the index and the exporter around it import probers', () => {
  const proberOf = (path: string) => /^probers\/([^/]+)\//.exec(path)?.[1]
  for (const [file, targets] of imports) {
    const own = proberOf(file)
    for (const target of targets) {
      const other = proberOf(target)
      if (other === undefined || other === own) continue
      if (own !== undefined) assert.fail(`${file} (prober ${own}) imports ${target} (prober ${other})`)
      // Outside the probers, only the index knows them one by one.
      assert.equal(file, 'probers/index.ts', `${file} imports ${target}; go through probers/index.ts`)
    }
  }
})
