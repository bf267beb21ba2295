// Secret: a string that prints as <secret> everywhere (JSON, template strings, util.inspect).
import { inspect } from 'node:util'

export class Secret {
  readonly #value: string
  constructor(value: string) {
    this.#value = value
  }
  reveal(): string {
    return this.#value
  }
  toString(): string {
    return '<secret>'
  }
  toJSON(): string {
    return '<secret>'
  }
  [inspect.custom](): string {
    return '<secret>'
  }
}
