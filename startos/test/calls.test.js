// Form input → vllmd argv and standard input; vllmd's answer → the ActionResult StartOS shows.
'use strict'
const test = require('node:test')
const assert = require('node:assert/strict')
const { layer } = require('./support')

const { setModelCall, deleteModelCall, envLines, actionResult, isActionResult, getApiKeyCall } =
  layer('calls')

const SECRET = 'hf_s3cr3t-v4lue=with=equals'
const form = {
  version: 1,
  hardware: { tier: 'cpu', budget_gb: 16, gpus: 1, source: 'stated', notes: [] },
  default: 'qwen3-0.6b',
  current: { selection: null, customArgs: '', envNames: [] },
  presets: [
    {
      id: 'qwen3-0.6b',
      name: 'Qwen3 0.6B',
      fits: true,
      reason: 'needs 4 GB',
      tensorParallelSize: 1,
      maxModelLen: 8192,
      minMemoryGb: 4,
    },
    {
      id: 'llama-33-70b',
      name: 'Llama 3.3 70B',
      fits: false,
      reason: 'no build for cpu',
      tensorParallelSize: null,
      maxModelLen: null,
      minMemoryGb: null,
    },
  ],
}
const keep = { selection: 'keep', value: {} }

test('a preset becomes --preset ID and keeps the environment', () => {
  const call = setModelCall(
    { model: { selection: 'qwen3-0.6b', value: {} }, environment: keep },
    form,
  )
  assert.deepEqual(call, {
    argv: ['action', 'set-model', '--force', '--preset', 'qwen3-0.6b'],
    stdin: null,
  })
})

test('custom arguments become one --custom argument, trimmed, for vllmd to split', () => {
  const args = `org/model --speculative-config '{"method": "ngram"}'`
  const call = setModelCall(
    { model: { selection: 'custom', value: { args: `  ${args} ` } }, environment: keep },
    form,
  )
  assert.deepEqual(call.argv, ['action', 'set-model', '--force', '--custom', args])
})

test('environment values go to standard input with --env-stdin, never into argv', () => {
  const environment = {
    selection: 'replace',
    value: {
      variables: [
        { name: 'HF_TOKEN', value: SECRET },
        { name: 'EMPTY', value: null },
      ],
    },
  }
  const call = setModelCall({ model: { selection: 'qwen3-0.6b', value: {} }, environment }, form)
  assert.deepEqual(call.argv, [
    'action',
    'set-model',
    '--force',
    '--preset',
    'qwen3-0.6b',
    '--env-stdin',
  ])
  assert.equal(call.stdin, `HF_TOKEN=${SECRET}\nEMPTY=\n`)
  assert.ok(!call.argv.join(' ').includes('s3cr3t'))
})

test('replacing with an empty list sends empty standard input (the stored list is emptied)', () => {
  const environment = { selection: 'replace', value: { variables: [] } }
  const call = setModelCall(
    { model: { selection: 'custom', value: { args: 'a/b' } }, environment },
    form,
  )
  assert.equal(call.stdin, '')
})

for (const [what, variables, message] of [
  ['a line break in a value', [{ name: 'A', value: 'x\nEVIL=1' }], /cannot contain a line break/],
  ['a carriage return in a value', [{ name: 'A', value: 'x\r' }], /cannot contain a line break/],
  ['a bad name', [{ name: '1A', value: 'x' }], /letters, digits and underscores/],
  ['a name with =', [{ name: 'A=B', value: 'x' }], /letters, digits and underscores/],
  [
    'a name given twice',
    [
      { name: 'A', value: '1' },
      { name: 'A', value: '2' },
    ],
    /given twice/,
  ],
]) {
  test(`environment with ${what} is refused without showing the value`, () => {
    assert.throws(
      () => envLines(variables),
      (error) => {
        assert.match(error.message, message)
        assert.ok(!error.message.includes('EVIL') && !error.message.includes('x\r'))
        return true
      },
    )
  })
}

test("a preset that does not fit is refused with vllmd's reason before vllmd runs", () => {
  assert.throws(
    () =>
      setModelCall({ model: { selection: 'llama-33-70b', value: {} }, environment: keep }, form),
    /Llama 3.3 70B does not fit this machine: no build for cpu/,
  )
  assert.throws(
    () => setModelCall({ model: { selection: 'nope', value: {} }, environment: keep }, form),
    /not a preset/,
  )
})

test('custom without arguments is refused', () => {
  for (const args of ['', '   ', null, undefined]) {
    assert.throws(
      () =>
        setModelCall({ model: { selection: 'custom', value: { args } }, environment: keep }, form),
      /give the `vllm serve` arguments/,
    )
  }
})

test('delete and get-api-key calls', () => {
  assert.deepEqual(deleteModelCall('org/name').argv, [
    'action',
    'delete-model-cache',
    '--model',
    'org/name',
  ])
  assert.throws(() => deleteModelCall(''), /Choose a cached model/)
  assert.deepEqual(getApiKeyCall, { argv: ['action', 'get-api-key'], stdin: null })
})

const good = {
  version: '1',
  title: 'API Key',
  message: 'use it',
  result: { type: 'single', value: 'K'.repeat(22), copyable: true, masked: true, qr: false },
}

test('a well-formed result of vllmd is shown as it is', () => {
  const exec = { exitCode: 0, stdout: JSON.stringify(good) + '\n', stderr: '' }
  assert.deepEqual(actionResult('Get API Key', exec), good)
  const grouped = {
    version: '1',
    title: 'Model set',
    message: null,
    result: { type: 'group', value: [{ name: 'Model', description: null, ...good.result }] },
  }
  assert.ok(isActionResult(grouped))
})

test("exit 1 is vllmd's own explanation, without its prefix", () => {
  const exec = {
    exitCode: 1,
    stdout: '',
    stderr: "vllmd action set-model: --preset 'x': no such preset\n",
  }
  assert.throws(() => actionResult('Set Model', exec), { message: "--preset 'x': no such preset" })
})

for (const [what, exec, message] of [
  ['garbage', { exitCode: 0, stdout: 'Traceback ...', stderr: '' }, /did not answer with JSON/],
  [
    'another shape',
    { exitCode: 0, stdout: JSON.stringify({ ...good, version: 1 }), stderr: '' },
    /not an action result/,
  ],
  [
    'a bad member',
    {
      exitCode: 0,
      stdout: JSON.stringify({ ...good, result: { type: 'group', value: [{ type: 'single' }] } }),
      stderr: '',
    },
    /not an action result/,
  ],
  ['a crash', { exitCode: 137, stdout: '', stderr: '' }, /exited with 137/],
  ['a signal', { exitCode: null, stdout: '', stderr: '' }, /exited with a signal/],
  ['exit 1 saying nothing', { exitCode: 1, stdout: '', stderr: '' }, /exited with 1/],
]) {
  test(`vllmd's answer with ${what} is an error that does not echo the output`, () => {
    assert.throws(
      () => actionResult('Get API Key', exec),
      (error) => {
        assert.match(error.message, message)
        assert.ok(!error.message.includes('KKKK'))
        return true
      },
    )
  })
}
