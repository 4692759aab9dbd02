// Promises about where things live in the layer, read from its sources.
'use strict'
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { root, layer } = require('./support')

const sources = path.join(root, 'startos')
const files = (dir) =>
  fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((e) =>
      e.isDirectory()
        ? files(path.join(dir, e.name))
        : e.name.endsWith('.ts')
          ? [path.join(dir, e.name)]
          : [],
    )
const text = (rel) => fs.readFileSync(path.join(sources, rel), 'utf8')

test('main never reads store.json (a reactive read would restart vllmd on every Set Model)', () => {
  const main = text('main.ts')
  assert.ok(
    !/storeText|storeJson|store\.json|fileModels|FileHelper/.test(
      main.replace(/\/\*\*[\s\S]*?\*\//g, ''),
    ),
  )
  assert.match(main, /runAsInit: true/)
})

test('subcontainers are touched in one module only; layer/ is pure', () => {
  for (const file of files(sources)) {
    const rel = path.relative(sources, file)
    const code = fs.readFileSync(file, 'utf8')
    if (rel !== 'vllmd.ts')
      assert.ok(!/SubContainer|\bsub\w*\.(exec|launch|spawn)\(/.test(code), rel)
    if (rel.startsWith('layer')) assert.ok(!/from '\.\.\/(sdk|vllmd)'|effects\./.test(code), rel)
  }
})

test("StartOS waits longer than vllmd's whole stop before SIGKILL", () => {
  const { SIGTERM_TIMEOUT_MS, DRAIN_S, STOP_TIMEOUT_S, KILL_WAIT_S } = layer('timing')
  assert.ok(SIGTERM_TIMEOUT_MS > (DRAIN_S + STOP_TIMEOUT_S + KILL_WAIT_S) * 1000)
})

test('init asks for a model exactly when none is selected', () => {
  const { needsModel } = layer('tasks')
  const cases = [
    [null, true], // no store.json
    ['{}', true],
    ['{"serveArgs": []}', true],
    ['{"serveArgs": ["org/model"], "modelSelection": {"selection": "custom"}}', false],
    ['', true], // a non-atomic write caught half-way: Set Model replaces it
    ['{"serveArgs": "org/model"}', true],
    ['{"serveArgs": [1]}', true],
    ['[]', true],
    ['null', true],
  ]
  for (const [text, expected] of cases) assert.equal(needsModel(text), expected, String(text))
})

test("dependents' import: utils.ts holds the API's host id and port and imports nothing", () => {
  const utils = text('utils.ts')
  assert.ok(!/^\s*import\b|\brequire\(/m.test(utils), 'utils.ts imports something')
  const { apiHostId, apiPort } = require(path.join(root, 'build', 'test', 'utils'))
  assert.equal(apiHostId, 'api-multi')
  assert.equal(apiPort, 8000)
})

test('the ids dependents and users rely on', () => {
  const { DAEMON_ID, API_INTERFACE_ID, DOWNLOAD_CHECK_ID } = layer('ids')
  assert.equal(DAEMON_ID, 'primary') // Open WebUI requires the health check `primary`
  assert.equal(API_INTERFACE_ID, 'api')
  assert.equal(DOWNLOAD_CHECK_ID, 'model-download')
  assert.match(text('main.ts'), /addDaemon\(DAEMON_ID,/)
  assert.match(text('main.ts'), /addHealthCheck\(DOWNLOAD_CHECK_ID,/)
  assert.match(text('interfaces.ts'), /sdk\.MultiHost\.of\(effects, apiHostId\)/)
  const ids = [
    'actions/getApiCredentials.ts',
    'actions/setModel.ts',
    'actions/deleteModelCache.ts',
  ].map((file) => /sdk\.Action\.with\w+\(\s*(?:\/\/[^\n]*\n\s*)*'([^']+)'/.exec(text(file))[1])
  assert.deepEqual(ids, ['get-api-credentials', 'set-model', 'delete-model-cache'])
})

test('the version is a release of vLLM, and the image pins that release', () => {
  const { PACKAGE_VERSION, vllmTagOf } = layer('version')
  assert.match(PACKAGE_VERSION, /^\d+\.\d+\.\d+:\d+$/)
  assert.equal(vllmTagOf('0.32.0:0'), 'v0.32.0')
  assert.throws(() => vllmTagOf('0.32.0'), /not a release like 0\.32\.0:0/)
  assert.match(text('versions/current.ts'), /version: PACKAGE_VERSION,/)
})
