/**
 * Set Model: the form comes from `vllmd action set-model --form` when it opens (the presets
 * that fit this machine, the rest disabled with vllmd's reason, the current choice pre-filled);
 * running it calls `set-model --preset ID` or `--custom ARGS`, with environment values on
 * standard input (`--env-stdin`). vllmd writes store.json and restarts vLLM by itself.
 */
import { actionResult, setModelCall, type SetModelInput } from '../layer/calls'
import {
  CUSTOM,
  initialSelection,
  parseSetModelForm,
  setModelSpec,
  type SetModelForm,
} from '../layer/forms'
import { sdk } from '../sdk'
import { runVllmd } from '../vllmd'
import type { T } from '@start9labs/start-sdk'

async function readForm(effects: T.Effects): Promise<SetModelForm> {
  const exec = await runVllmd(
    effects,
    { argv: ['action', 'set-model', '--form'], stdin: null },
    'set-model-form',
  )
  if (exec.exitCode !== 0) {
    throw new Error(
      exec.stderr.trim() || `vllmd action set-model --form exited with ${exec.exitCode}`,
    )
  }
  return parseSetModelForm(exec.stdout)
}

// The form each open saw, so that run checks the choice against the same facts.
let lastForm: SetModelForm | null = null

export const setModel = sdk.Action.withInput(
  'set-model',
  async () => ({
    name: 'Set Model',
    description:
      'Choose the model vLLM serves: a preset sized for this machine, or custom `vllm serve` ' +
      'arguments. The weights download on the first start with that model.',
    warning:
      'Changing the model restarts vLLM, and a model not yet cached is downloaded first ' +
      '(30 minutes or more for a large one).',
    allowedStatuses: 'any',
    group: null,
    visibility: 'enabled',
  }),
  async ({ effects }) => {
    lastForm = await readForm(effects)
    return setModelSpec(lastForm)
  },
  async () => {
    if (lastForm === null) return null
    const selection = initialSelection(lastForm)
    return {
      model: {
        selection,
        value: selection === CUSTOM ? { args: lastForm.current.customArgs } : {},
      },
      environment: { selection: 'keep', value: {} },
    } as never
  },
  async ({ effects, input }) => {
    const call = setModelCall(input as unknown as SetModelInput, lastForm)
    return actionResult('Set Model', await runVllmd(effects, call, 'set-model'))
  },
)
