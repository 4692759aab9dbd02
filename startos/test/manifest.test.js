// The manifest each variant packs, extracted from the bundle exactly as `start-cli s9pk pack`
// does: `node -e "console.log(JSON.stringify(require('javascript/index.js').manifest))"` with
// VARIANT set. Needs `npm run build` first; in CI (CI set) a missing bundle fails.
'use strict'
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const { root } = require('./support')

const bundle = path.join(root, 'javascript', 'index.js')
const built = fs.existsSync(bundle)
if (!built && process.env.CI) throw new Error(`CI: ${bundle} is missing; run npm run build first`)
const skip = built ? false : 'no bundle: run npm run build first'

const versionsEnv = fs.readFileSync(path.join(root, 'containers', 'versions.env'), 'utf8')
const VLLM_VERSION = /^VLLM_VERSION=(\S+)$/m.exec(versionsEnv)[1]

function manifestOf(variant, extra = {}) {
  const env = { ...process.env, VARIANT: variant, ...extra }
  if (variant === undefined) delete env.VARIANT
  if (!('PACKAGE_REPO' in extra)) delete env.PACKAGE_REPO
  const out = execFileSync(
    'node',
    ['-e', `console.log(JSON.stringify(require('${bundle}').manifest))`],
    { env, cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
  )
  return JSON.parse(out)
}

const expected = {
  nvidia: {
    arch: ['x86_64', 'aarch64'],
    nvidiaContainer: true,
    device: [{ class: 'display', driver: 'nvidia', product: null }],
    hardwareAcceleration: true,
  },
  rocm: {
    arch: ['x86_64'],
    nvidiaContainer: false,
    device: [{ class: 'display', driver: 'amdgpu' }],
    hardwareAcceleration: true,
  },
  cpu: {
    arch: ['x86_64'],
    nvidiaContainer: false,
    device: [],
    hardwareAcceleration: true,
  },
}

for (const [variant, want] of Object.entries(expected)) {
  test(`the ${variant} manifest`, { skip }, () => {
    const m = manifestOf(variant)
    assert.equal(m.id, 'vllm')
    assert.deepEqual(m.volumes, ['main', 'public'])
    assert.equal(m.sdkVersion, '2.0.9')
    assert.match(m.osVersion, /^0\.4\./)
    assert.equal(m.version, `${VLLM_VERSION.replace(/^v/, '')}:0`)
    assert.deepEqual(Object.keys(m.images), ['vllm'])
    const image = m.images.vllm
    assert.deepEqual(image.source, {
      dockerBuild: {
        workdir: '.',
        dockerfile: `containers/Containerfile.${variant}`,
        buildArgs: { VLLM_VERSION },
      },
    })
    // the build context and Containerfile are where start-cli (run at the root) looks
    assert.ok(fs.existsSync(path.join(root, image.source.dockerBuild.dockerfile)))
    assert.ok(fs.existsSync(path.join(root, 'vllmd', 'cli.py')))
    // what the registry and StartOS read: upstream's license, a URL for this repository
    assert.equal(m.license, 'Apache-2.0')
    assert.equal(m.packageRepo, 'https://github.com/Start9Labs/vllm-startos')
    assert.equal(m.upstreamRepo, 'https://github.com/vllm-project/vllm')
    assert.deepEqual(image.arch, want.arch)
    assert.equal(image.emulateMissingAs, null)
    assert.equal(image.nvidiaContainer, want.nvidiaContainer)
    assert.deepEqual(m.hardwareRequirements.arch, want.arch)
    assert.equal(m.hardwareRequirements.device.length, want.device.length)
    want.device.forEach((d, i) => {
      const got = m.hardwareRequirements.device[i]
      for (const [k, v] of Object.entries(d)) assert.equal(got[k], v)
      assert.ok(got.description)
    })
    if (variant === 'rocm') {
      const amd = new RegExp(m.hardwareRequirements.device[0].product.replace('(?i)', ''), 'i')
      assert.ok(amd.test('Navi 31 [Radeon RX 7900 XTX]') && amd.test('Instinct MI300X'))
      assert.ok(!amd.test('Rembrandt [Radeon 680M]'))
    }
    assert.equal(m.hardwareAcceleration, want.hardwareAcceleration)
    assert.ok(m.description.short.en_US.length <= 80 && m.description.long.en_US.length <= 500)
  })
}

test('VARIANT unset (StartOS loading the bundle at run time) reads as cpu', { skip }, () => {
  assert.equal(
    manifestOf(undefined).images.vllm.source.dockerBuild.dockerfile,
    'containers/Containerfile.cpu',
  )
})

test('the variants publish under one version: their shared metadata is equal', { skip }, () => {
  // The registry merges a version's variants into one entry and refuses a mismatch in what they
  // share; only images and hardwareRequirements may differ.
  const shared = (m) => {
    const { images, hardwareRequirements, gitHash, ...rest } = m
    return rest
  }
  const [nvidia, rocm, cpu] = ['nvidia', 'rocm', 'cpu'].map((v) => shared(manifestOf(v)))
  assert.deepEqual(rocm, nvidia)
  assert.deepEqual(cpu, nvidia)
})

test('PACKAGE_REPO overrides the repository URL, and must be one', { skip }, () => {
  const fork = 'https://example.org/fork/vllm-startos'
  assert.equal(manifestOf('cpu', { PACKAGE_REPO: fork }).packageRepo, fork)
  assert.equal(
    manifestOf('cpu', { PACKAGE_REPO: '' }).packageRepo,
    'https://github.com/Start9Labs/vllm-startos',
  )
  assert.throws(() => manifestOf('cpu', { PACKAGE_REPO: 'not a url' }), /PACKAGE_REPO="not a url"/)
})
