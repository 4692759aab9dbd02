// Shared by the node tests: the layer's pure modules as compiled by `npm run build:test`, and the
// stand-in for StartOS's `effects` (the pure functions never touch it; the stub proves it).
'use strict'
const path = require('node:path')

// the package root: the repository root
const root = path.join(__dirname, '..', '..')
const layer = (name) => require(path.join(root, 'build', 'test', 'layer', name))

// Any use of effects throws: the form builders must not reach for a live StartOS.
const effects = new Proxy(
  {},
  {
    get(_, key) {
      throw new Error(`effects.${String(key)} used by a pure function`)
    },
  },
)

/** Build an InputSpec the way StartOS does when a form opens: its spec and its validator. */
async function built(spec) {
  return spec.build({ effects, prefill: null })
}

module.exports = { root, layer, effects, built }
