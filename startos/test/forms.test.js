// The Set Model and Delete Model Cache forms built from real `vllmd … --form` output, and the
// SDK's own validator (the one StartOS runs on submitted input) accepting and refusing input.
//
// tests/test_startos.py runs the installed vllmd on recorded machines (a CPU one and a stated
// H200), writes what it printed to a folder, names it in VLLMD_FORMS_DIR, runs this file and
// checks that nothing was skipped. Run without the folder (npm test), these tests skip, saying so.
'use strict'
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { layer, built } = require('./support')

const forms = layer('forms')
const { setModelCall } = layer('calls')

const dir = process.env.VLLMD_FORMS_DIR
const files = dir ? fs.readdirSync(dir).sort() : []
const skip = dir ? false : 'VLLMD_FORMS_DIR is not set: run pytest tests/test_startos.py'

const read = (name) => fs.readFileSync(path.join(dir, name), 'utf8')
const setModelFiles = files.filter((f) => f.endsWith('.set-model.json'))
const cacheFiles = files.filter((f) => f.endsWith('.cache.json'))

test('the folder holds set-model and cache forms', { skip }, () => {
  assert.ok(setModelFiles.length >= 2, files.join(', '))
  assert.ok(cacheFiles.length >= 1, files.join(', '))
})

for (const file of setModelFiles) {
  test(`set-model form from ${file}`, { skip }, async () => {
    const form = forms.parseSetModelForm(read(file))
    const { spec, validator } = await built(forms.setModelSpec(form))

    // every preset in vllmd's order, then Custom; the ones that do not fit are disabled with the reason
    const model = spec.model
    assert.equal(model.type, 'union')
    assert.deepEqual(Object.keys(model.variants), [...form.presets.map((p) => p.id), 'custom'])
    const unfit = form.presets.filter((p) => !p.fits)
    assert.deepEqual(model.disabled, unfit.length ? unfit.map((p) => p.id) : false)
    for (const p of form.presets) {
      const name = model.variants[p.id].name
      assert.equal(name, p.fits ? p.name : `${p.name} (does not fit: ${p.reason})`)
    }
    assert.equal(model.default, forms.initialSelection(form))
    assert.ok(model.description.includes(form.hardware.tier))
    const args = model.variants.custom.spec.args
    assert.equal(args.type, 'text')
    assert.equal(args.default, form.current.customArgs || null)

    // environment: keep (naming the stored variables, never values) or replace, values masked
    const env = spec.environment
    assert.deepEqual(Object.keys(env.variants), ['keep', 'replace'])
    assert.equal(env.default, 'keep')
    for (const name of form.current.envNames) assert.ok(env.variants.keep.name.includes(name))
    const item = env.variants.replace.spec.variables.spec.spec
    assert.equal(item.value.masked, true)
    assert.equal(item.name.patterns[0].regex, forms.ENV_NAME.source)

    // the SDK's validator accepts what the form can send ...
    const fitting = form.presets.find((p) => p.fits)
    const accepted = [
      {
        model: { selection: 'custom', value: { args: 'org/model' } },
        environment: { selection: 'keep', value: {} },
      },
      {
        model: { selection: 'custom', value: { args: 'org/model' } },
        environment: {
          selection: 'replace',
          value: {
            variables: [
              { name: 'HF_TOKEN', value: 'x' },
              { name: 'A', value: null },
            ],
          },
        },
      },
    ]
    if (fitting)
      accepted.push({
        model: { selection: fitting.id, value: {} },
        environment: { selection: 'keep', value: {} },
      })
    for (const input of accepted) {
      const parsed = validator.safeParse(input)
      assert.ok(parsed.success, JSON.stringify(input))
      // ... and what it accepts becomes a vllmd call with no value on the command line
      const call = setModelCall(parsed.data, form)
      assert.equal(call.argv[0], 'action')
      assert.ok(!call.argv.includes('HF_TOKEN=x'))
    }
    // ... and refuses what it cannot
    const refused = [
      {
        model: { selection: 'no-such-preset', value: {} },
        environment: { selection: 'keep', value: {} },
      },
      {
        model: { selection: 'custom', value: { args: null } },
        environment: { selection: 'keep', value: {} },
      },
      { model: { selection: 'custom', value: {} }, environment: { selection: 'keep', value: {} } },
      {
        model: { selection: 'custom', value: { args: 'a/b' } },
        environment: { selection: 'sometimes', value: {} },
      },
      {
        model: { selection: 'custom', value: { args: 'a/b' } },
        environment: { selection: 'replace', value: { variables: [{ name: 7 }] } },
      },
      { model: { selection: 'custom', value: { args: 'a/b' } } },
      'not an object',
    ]
    for (const input of refused)
      assert.ok(!validator.safeParse(input).success, JSON.stringify(input))
  })
}

for (const file of cacheFiles) {
  test(`delete-model-cache form from ${file}`, { skip }, async () => {
    const form = forms.parseCacheForm(read(file))
    const { spec, validator } = await built(forms.cacheSpec(form))
    const select = spec.model
    assert.equal(select.type, 'select')
    assert.deepEqual(
      Object.keys(select.values),
      form.models.map((m) => m.id),
    )
    const selected = form.models.filter((m) => m.selected).map((m) => m.id)
    if (form.models.length === 0) assert.equal(select.disabled, 'No cached models')
    else assert.deepEqual(select.disabled, selected.length ? selected : false)
    for (const m of form.models) assert.ok(select.values[m.id].startsWith(m.id))
    if (form.models.length) {
      assert.ok(validator.safeParse({ model: form.models[0].id }).success)
      assert.ok(!validator.safeParse({ model: 'not/cached' }).success)
    }
  })
}

test('output of another shape is refused with where it differs', () => {
  assert.throws(() => forms.parseSetModelForm('not json'), /did not print JSON/)
  assert.throws(() => forms.parseSetModelForm('{"version": 2}'), /another shape \(at version\)/)
  assert.throws(
    () => forms.parseCacheForm('{"version": 1, "models": [{"id": "a"}]}'),
    /another shape \(at models\.0\.bytes\)/,
  )
})
