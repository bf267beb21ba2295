// The Node flags the image runs the exporter with (the Dockerfile's ENTRYPOINT), for `npm start`'s test and the
// benchmark, so that what is measured and what ships are the same.
import { readFileSync } from 'node:fs'

/** The arguments between `node` and `dist/src/main.js` in the Dockerfile's exec-form ENTRYPOINT. */
export function entrypointNodeFlags(
  dockerfile = readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8'),
) {
  const line = dockerfile.split('\n').find((l) => l.startsWith('ENTRYPOINT '))
  if (!line) throw new Error('Dockerfile: no ENTRYPOINT')
  const words: unknown = JSON.parse(line.slice('ENTRYPOINT '.length))
  if (!Array.isArray(words) || words[0] !== 'node' || !words.includes('dist/src/main.js'))
    throw new Error(`Dockerfile: ENTRYPOINT is not ["node", ..., "dist/src/main.js"]: ${line}`)
  return (words as string[]).slice(1, words.indexOf('dist/src/main.js'))
}
