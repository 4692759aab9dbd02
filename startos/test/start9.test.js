// The update from Start9's own `vllm` package: store.json as each of its releases left it, made
// readable by vllmd, with the API key left where it was (vllmd adopts it).
'use strict'
const test = require('node:test')
const assert = require('node:assert/strict')
const { layer } = require('./support')

const { fromStart9Store } = layer('start9')

const KEY = 'aB3dE5fG7hJ9kL1mN3pQ5r' // 22 letters and digits, as their init made it
const BNB = 'unsloth/Mistral-Small-3.2-24B-Instruct-2506-bnb-4bit'
const AWQ = 'jeffcookio/Mistral-Small-3.2-24B-Instruct-2506-awq-sym'
const MISTRAL_TAIL = ['--tokenizer-mode', 'mistral', '--enable-auto-tool-choice']
// How the SDK's FileHelper.json wrote every one of them: two-space JSON, no final newline.
const written = (store) => JSON.stringify(store, null, 2)
const after = (store) => {
  const out = fromStart9Store(written(store))
  return out === null ? null : JSON.parse(out)
}

test('0.16 beta, selectedModel only: the model becomes the custom serve args, the key stays', () => {
  const migrated = after({ apiKey: KEY, selectedModel: 'Qwen/Qwen3-0.6B' })
  assert.deepEqual(migrated, {
    apiKey: KEY,
    selectedModel: 'Qwen/Qwen3-0.6B',
    serveArgs: ['Qwen/Qwen3-0.6B'],
    modelSelection: { selection: 'custom', customArgs: 'Qwen/Qwen3-0.6B' },
  })
})

test('0.16 beta, a key and no model yet: untouched (Set Model asks)', () => {
  assert.equal(after({ apiKey: KEY }), null)
  assert.equal(after({ apiKey: KEY, selectedModel: '  ' }), null)
})

test('0.16.0:0.1, key in store.json and serve args with a preset: untouched', () => {
  const store = {
    apiKey: KEY,
    serveArgs: ['cyankiwi/Qwen3-30B-A3B-Instruct-2507-AWQ-4bit', '--max-model-len', '32768'],
    modelSelection: { selection: 'qwen3-30b-a3b' },
  }
  assert.equal(after(store), null)
})

test('0.23 to 0.31, no key in store.json, environment and custom text: untouched', () => {
  const store = {
    serveArgs: ['org/gated', '--max-model-len', '8192'],
    serveEnv: [{ name: 'HF_TOKEN', value: 'hf_secret' }],
    modelSelection: {
      selection: 'custom',
      customArgs: 'org/gated --max-model-len 8192',
      customEnv: [{ name: 'HF_TOKEN', value: 'hf_secret' }],
    },
  }
  assert.equal(after(store), null)
})

for (const [what, bnbArgs] of [
  ['spaced flags', ['--quantization', 'bitsandbytes', '--load-format', 'bitsandbytes']],
  ['flag=value forms', ['--quantization=bitsandbytes', '--load-format=bitsandbytes']],
]) {
  test(`before 0.28, the bitsandbytes Mistral preset becomes the AWQ one (${what})`, () => {
    const store = {
      apiKey: KEY,
      serveArgs: [BNB, ...bnbArgs, ...MISTRAL_TAIL],
      modelSelection: { selection: 'mistral-small-32-24b' },
    }
    const migrated = after(store)
    assert.deepEqual(migrated.serveArgs, [AWQ, ...MISTRAL_TAIL])
    assert.equal(migrated.apiKey, KEY)
    assert.deepEqual(migrated.modelSelection, { selection: 'mistral-small-32-24b' })
  })
}

test('a custom selection naming the bitsandbytes checkpoint is the user’s own: untouched', () => {
  const store = {
    serveArgs: [BNB, '--quantization', 'bitsandbytes'],
    modelSelection: { selection: 'custom', customArgs: `${BNB} --quantization bitsandbytes` },
  }
  assert.equal(after(store), null)
})

test('no file, or one vllmd would refuse anyway, is left for vllmd to report', () => {
  for (const text of [null, '', '{', '[]', 'null', '"x"']) assert.equal(fromStart9Store(text), null)
})

test('unknown keys are kept as they were', () => {
  const migrated = after({ apiKey: KEY, selectedModel: 'a/b', extra: { nested: [1, 2] } })
  assert.deepEqual(migrated.extra, { nested: [1, 2] })
})
