/**
 * An update from Start9's own `vllm` package: what its releases left in `store.json`, made
 * readable by vllmd (pure). The version graph runs it once, on the update.
 *
 * Their `serveArgs`, `serveEnv` and `modelSelection` (same preset ids) already have vllmd's shape
 * and stay as they are. Two things do not:
 * - the first beta kept only `selectedModel` (a model id): it becomes the custom `serveArgs`;
 * - before their 0.28.0:0, the Mistral Small 3.2 preset on Hopper and older NVIDIA cards stored a
 *   bitsandbytes checkpoint that vLLM 0.28 and later cannot load without a plugin the images do
 *   not carry: it becomes the AWQ checkpoint our preset names, without the bitsandbytes flags.
 *
 * Every other key is kept, `apiKey` first of all: their releases kept the API key there, and vllmd
 * adopts it when `credentials.json` is missing or invalid, so dependents keep working.
 */

import { isRecord, parseRecord } from './json'

const MISTRAL_PRESET = 'mistral-small-32-24b'
const MISTRAL_BNB = 'unsloth/Mistral-Small-3.2-24B-Instruct-2506-bnb-4bit'
const MISTRAL_AWQ = 'jeffcookio/Mistral-Small-3.2-24B-Instruct-2506-awq-sym'
const BNB_FLAGS = ['--quantization', '--load-format']

type Store = Record<string, unknown>

function isStrings(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string')
}

function withoutBitsandbytes(args: string[]): string[] {
  const kept: string[] = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]
    if (BNB_FLAGS.includes(arg) && args[i + 1] === 'bitsandbytes') {
      i++
      continue
    }
    if (BNB_FLAGS.some((flag) => arg === `${flag}=bitsandbytes`)) continue
    kept.push(arg === MISTRAL_BNB ? MISTRAL_AWQ : arg)
  }
  return kept
}

function selection(store: Store): unknown {
  const chosen = store.modelSelection
  return isRecord(chosen) ? chosen.selection : undefined
}

/**
 * The text of `store.json` after the update from a Start9 release, or `null` to leave the file
 * untouched: no file, a file vllmd would refuse anyway (it reports that itself), or nothing to
 * change.
 */
export function fromStart9Store(text: string | null): string | null {
  const parsed = parseRecord(text)
  if (parsed === null) return null
  const store: Store = { ...parsed }
  let changed = false

  const model = store.selectedModel
  const args = store.serveArgs
  if ((args === undefined || (isStrings(args) && args.length === 0)) && typeof model === 'string') {
    const id = model.trim()
    if (id) {
      store.serveArgs = [id]
      if (store.modelSelection === undefined) {
        store.modelSelection = { selection: 'custom', customArgs: id }
      }
      changed = true
    }
  }

  const current = store.serveArgs
  if (selection(store) === MISTRAL_PRESET && isStrings(current) && current.includes(MISTRAL_BNB)) {
    store.serveArgs = withoutBitsandbytes(current)
    changed = true
  }

  return changed ? `${JSON.stringify(store, null, 2)}\n` : null
}
