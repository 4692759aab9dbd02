// `vllmd health` exit code and JSON → the health StartOS shows: total, never throws.
'use strict'
const test = require('node:test')
const assert = require('node:assert/strict')
const { layer } = require('./support')

const { healthOf, downloadHealthOf, NOT_RUNNING, NOT_A_REPORT, NOT_RUN, NO_DOWNLOAD } =
  layer('health')

const report = (result, message, detail = {}) =>
  JSON.stringify({ result, message, since: 1, pid: 1, task: null, detail })
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

// The "Model download" check reads detail.fetch (the fetch interface's shape).
const MOVING = 'Downloading Org/Model: 12.4 of 40.0 GB (31 %), 48 MB/s, about 10 min left.'
const FAILED =
  'Downloading Org/Model failed: the disk is full (needs 40.0 GB, 12.0 GB free). Free space ' +
  'with Delete Model Cache, or pick a smaller model.'
const fetchOf = (error, message) => ({
  model: 'Org/Model',
  done: 12_400_000_000,
  total: 40_000_000_000,
  rate_bps: 48_000_000,
  eta_s: 600,
  error,
  message,
})
const downloads = [
  [
    'no download: success while the API serves',
    { exitCode: 0, stdout: report('success', 'The vLLM API is ready') },
    { result: 'success', message: NO_DOWNLOAD },
  ],
  [
    'no download while the API loads',
    { exitCode: 1, stdout: report('loading', 'The vLLM API is starting.', { fetch: null }) },
    { result: 'success', message: NO_DOWNLOAD },
  ],
  [
    'a moving download with no old model serving: loading, with the sentence',
    {
      exitCode: 1,
      stdout: report('loading', `The vLLM API is starting. ${MOVING}`, {
        fetch: fetchOf(null, MOVING),
      }),
    },
    { result: 'loading', message: MOVING },
  ],
  [
    'a moving download while the old model serves (the API check stays success)',
    {
      exitCode: 0,
      stdout: report('success', 'The vLLM API is ready', { fetch: fetchOf(null, MOVING) }),
    },
    { result: 'loading', message: MOVING },
  ],
  [
    'a failed download: failure, with why and what to do',
    {
      exitCode: 0,
      stdout: report('success', 'The vLLM API is ready', {
        fetch: fetchOf({ kind: 'disk-full', message: 'No space left' }, FAILED),
      }),
    },
    { result: 'failure', message: FAILED },
  ],
  [
    "a failed download without a sentence: the error's own message",
    {
      exitCode: 1,
      stdout: report('failure', 'x', {
        fetch: fetchOf({ kind: 'gated', message: 'Org/Model is gated: add HF_TOKEN' }, ''),
      }),
    },
    { result: 'failure', message: 'Org/Model is gated: add HF_TOKEN' },
  ],
  [
    'a download report that is not an object',
    { exitCode: 1, stdout: report('loading', 'x', { fetch: 'Downloading' }) },
    { result: 'failure', message: NOT_A_REPORT },
  ],
  [
    'a moving download without its sentence',
    { exitCode: 1, stdout: report('loading', 'x', { fetch: fetchOf(null, undefined) }) },
    { result: 'failure', message: NOT_A_REPORT },
  ],
  ['vllmd not running', { exitCode: 2, stdout: '' }, { result: 'failure', message: NOT_RUNNING }],
  ['garbage', { exitCode: 0, stdout: 'Traceback' }, { result: 'failure', message: NOT_A_REPORT }],
  ['exec failed', new Error('ENOENT'), { result: 'failure', message: NOT_RUN }],
]

for (const [what, exec, expected] of downloads) {
  test(`model download: ${what}`, () => {
    const input = exec instanceof Error ? exec : { stderr: '', ...exec }
    assert.deepEqual(downloadHealthOf(input), expected)
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
    report('loading', 'x', { fetch: [] }),
    report('loading', 'x', { fetch: { error: 1 } }),
    report('loading', 'x', []),
    'x'.repeat(100_000),
  ]
  for (const stdout of outputs) {
    for (const exitCode of [0, 1, 2, 3, -1, null]) {
      for (const check of [healthOf, downloadHealthOf]) {
        const health = check({ exitCode, stdout, stderr: '' })
        assert.ok(['success', 'loading', 'failure'].includes(health.result))
        assert.ok(health.message)
      }
    }
  }
})
