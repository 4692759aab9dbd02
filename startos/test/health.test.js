// `vllmd health` exit code and JSON → the health StartOS shows: total, never throws.
'use strict'
const test = require('node:test')
const assert = require('node:assert/strict')
const { layer } = require('./support')

const { healthOf, NOT_RUNNING, NOT_A_REPORT, NOT_RUN } = layer('health')

const report = (result, message) =>
  JSON.stringify({ result, message, since: 1, pid: 1, task: null, detail: {} })
const LOADING =
  'The vLLM API is starting. A first-time model download plus load can take 30+ minutes.'

const cases = [
  [
    'exit 0 with success',
    { exitCode: 0, stdout: report('success', 'The vLLM API is ready') },
    { result: 'success', message: 'The vLLM API is ready' },
  ],
  [
    'exit 1 while loading stays loading',
    { exitCode: 1, stdout: report('loading', LOADING) },
    { result: 'loading', message: LOADING },
  ],
  [
    'exit 1 with failure',
    { exitCode: 1, stdout: report('failure', 'No model selected. Run the "Set Model" action.') },
    { result: 'failure', message: 'No model selected. Run the "Set Model" action.' },
  ],
  [
    "exit 2 (no daemon, or a previous run's report)",
    { exitCode: 2, stdout: '' },
    { result: 'failure', message: NOT_RUNNING },
  ],
  [
    'exit 2 even with a success report',
    { exitCode: 2, stdout: report('success', 'The vLLM API is ready') },
    { result: 'failure', message: NOT_RUNNING },
  ],
  [
    'garbage on exit 0',
    { exitCode: 0, stdout: 'Traceback (most recent call last)' },
    { result: 'failure', message: NOT_A_REPORT },
  ],
  [
    'garbage on exit 1',
    { exitCode: 1, stdout: '{"result": ' },
    { result: 'failure', message: NOT_A_REPORT },
  ],
  ['a JSON list', { exitCode: 0, stdout: '[]' }, { result: 'failure', message: NOT_A_REPORT }],
  ['JSON null', { exitCode: 1, stdout: 'null' }, { result: 'failure', message: NOT_A_REPORT }],
  [
    'an empty message',
    { exitCode: 1, stdout: report('loading', '') },
    { result: 'failure', message: NOT_A_REPORT },
  ],
  [
    'exit 0 disagreeing with its report',
    { exitCode: 0, stdout: report('failure', 'x') },
    { result: 'failure', message: NOT_A_REPORT },
  ],
  [
    'exit 1 claiming success',
    { exitCode: 1, stdout: report('success', 'x') },
    { result: 'failure', message: NOT_A_REPORT },
  ],
  [
    'an unknown result',
    { exitCode: 1, stdout: report('starting', 'x') },
    { result: 'failure', message: NOT_A_REPORT },
  ],
  ['killed (exit 137)', { exitCode: 137, stdout: '' }, { result: 'failure', message: NOT_RUN }],
  ['ended by a signal', { exitCode: null, stdout: '' }, { result: 'failure', message: NOT_RUN }],
  [
    'exec failed',
    new Error('spawn start-container ENOENT'),
    { result: 'failure', message: NOT_RUN },
  ],
]

for (const [what, exec, expected] of cases) {
  test(`health: ${what}`, () => {
    const input = exec instanceof Error ? exec : { stderr: '', ...exec }
    const health = healthOf(input)
    assert.deepEqual(health, expected)
    assert.ok(typeof health.message === 'string' && health.message.length > 0)
  })
}

test('health never throws, whatever the output', () => {
  const outputs = [
    '',
    '{',
    '"text"',
    '1',
    'true',
    '{"result": 1}',
    '{"message": "x"}',
    '\u0000',
    'x'.repeat(100_000),
  ]
  for (const stdout of outputs) {
    for (const exitCode of [0, 1, 2, 3, -1, null]) {
      const health = healthOf({ exitCode, stdout, stderr: '' })
      assert.ok(['success', 'loading', 'failure'].includes(health.result))
      assert.ok(health.message)
    }
  }
})
