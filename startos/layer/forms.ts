/**
 * The input forms of Set Model and Delete Model Cache, built when a form opens from what vllmd
 * prints (`vllmd action set-model --form`, `vllmd action delete-model-cache --form`, CONTRACT
 * §4). Pure: JSON in, an SDK InputSpec out. vllmd decides what fits and why; this only shows it.
 */
import { ISB, z } from '@start9labs/start-sdk'

const { InputSpec, Value, Variants, List } = ISB

export const CUSTOM = 'custom'
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/

// The shapes vllmd pins (CONTRACT §4). Extra keys are allowed: the shape only grows.
const presetShape = z.object({
  id: z.string().min(1),
  name: z.string(),
  fits: z.boolean(),
  reason: z.string(),
  tensorParallelSize: z.number().int().nullable(),
  maxModelLen: z.number().int().nullable(),
  minMemoryGb: z.number().int().nullable(),
})

const setModelFormShape = z.object({
  version: z.literal(1),
  hardware: z.object({
    tier: z.string(),
    budget_gb: z.number(),
    gpus: z.number().int(),
    source: z.enum(['detected', 'stated']),
    notes: z.array(z.string()),
  }),
  default: z.string(),
  current: z.object({
    selection: z.string().nullable(),
    customArgs: z.string(),
    envNames: z.array(z.string()),
  }),
  presets: z.array(presetShape),
})

const cacheFormShape = z.object({
  version: z.literal(1),
  models: z.array(
    z.object({ id: z.string().min(1), bytes: z.number().int(), selected: z.boolean() }),
  ),
})

export type SetModelForm = z.infer<typeof setModelFormShape>
export type CacheForm = z.infer<typeof cacheFormShape>

/** What `vllmd action X --form` printed, checked; an Error that says what was wrong otherwise. */
function parseForm<T>(shape: z.ZodType<T>, what: string, stdout: string): T {
  let raw: unknown
  try {
    raw = JSON.parse(stdout)
  } catch {
    throw new Error(`${what} did not print JSON; the service logs may say why`)
  }
  const parsed = shape.safeParse(raw)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    const where = issue ? issue.path.join('.') || '(top)' : '(top)'
    throw new Error(`${what} printed JSON of another shape (at ${where}); is vllmd up to date?`)
  }
  return parsed.data
}

export const parseSetModelForm = (stdout: string): SetModelForm =>
  parseForm(setModelFormShape, 'vllmd action set-model --form', stdout)

export const parseCacheForm = (stdout: string): CacheForm =>
  parseForm(cacheFormShape, 'vllmd action delete-model-cache --form', stdout)

/** `12.3 GB` from bytes, for people. */
export function humanBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let value = bytes
  let unit = 0
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000
    unit += 1
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`
}

/** The hardware line of the form: `nvidia-hopper, 1 GPU, 141 GB (stated)`. */
export function describeHardware(form: SetModelForm): string {
  const { tier, budget_gb, gpus, source } = form.hardware
  const devices = tier === 'cpu' ? 'no GPU' : `${gpus} GPU${gpus === 1 ? '' : 's'}`
  const memory = tier === 'cpu' ? `${budget_gb} GB of memory` : `${budget_gb} GB each`
  return `${tier}, ${devices}, ${memory} (${source})`
}

/** A preset's label: its name, and for one that does not fit, vllmd's reason. */
export function presetLabel(preset: SetModelForm['presets'][number]): string {
  return preset.fits ? preset.name : `${preset.name} (does not fit: ${preset.reason})`
}

/** The choice the form opens on: the current selection while it still fits, else vllmd's default. */
export function initialSelection(form: SetModelForm): string {
  const current = form.current.selection
  if (current === CUSTOM) return CUSTOM
  const preset = form.presets.find((p) => p.id === current)
  return preset && preset.fits ? preset.id : form.default
}

const customSpec = (form: SetModelForm) =>
  InputSpec.of({
    args: Value.text({
      name: '`vllm serve` arguments',
      description:
        'The model id first, then any vLLM flags. Split like a shell line, so quotes work: ' +
        `--speculative-config '{"method": "ngram"}'. --host, --port, --download-dir and ` +
        '--api-key are set by the service and refused here.',
      required: true,
      default: form.current.customArgs || null,
      placeholder: 'Qwen/Qwen3-0.6B --max-model-len 8192',
    }),
  })

const variableSpec = InputSpec.of({
  name: Value.text({
    name: 'Name',
    required: true,
    default: null,
    patterns: [
      {
        regex: ENV_NAME.source,
        description: 'Letters, digits and underscores, not starting with a digit',
      },
    ],
  }),
  value: Value.text({
    name: 'Value',
    description: 'Kept secret: never shown again, never on a command line.',
    required: false,
    default: null,
    masked: true,
  }),
})

const environmentSpec = (form: SetModelForm) => {
  const names = form.current.envNames
  return Value.union({
    name: 'Environment for vLLM',
    description:
      'Variables for the vLLM process, for example HF_TOKEN for a gated model. Values are ' +
      'secret: the form never shows stored values, so keep them, or replace the whole list.',
    default: 'keep',
    variants: Variants.of({
      keep: {
        name: names.length ? `Keep as it is (${names.join(', ')})` : 'Keep as it is (none set)',
        spec: InputSpec.of({}),
      },
      replace: {
        name: 'Replace with this list',
        spec: InputSpec.of({
          variables: Value.list(
            List.obj(
              { name: 'Variables', default: [] },
              { spec: variableSpec, displayAs: '{{name}}', uniqueBy: 'name' },
            ),
          ),
        }),
      },
    }),
  })
}

/** The Set Model form: presets that fit as choices, the rest disabled with vllmd's reason. */
export function setModelSpec(form: SetModelForm) {
  const variants: Record<string, { name: string; spec: ReturnType<typeof customSpec> }> = {}
  for (const preset of form.presets) {
    variants[preset.id] = { name: presetLabel(preset), spec: InputSpec.of({}) as never }
  }
  variants[CUSTOM] = { name: 'Custom', spec: customSpec(form) }
  const disabled = form.presets.filter((p) => !p.fits).map((p) => p.id)
  const notes = form.hardware.notes.length ? ` ${form.hardware.notes.join(' ')}` : ''
  return InputSpec.of({
    model: Value.dynamicUnion(() => ({
      name: 'Model',
      description:
        `Presets sized for this machine: ${describeHardware(form)}.${notes} A preset that ` +
        'does not fit says why; Custom takes any `vllm serve` arguments.',
      warning:
        'vLLM restarts with the new model at once. A first start downloads the weights, ' +
        'which can take 30 minutes or more.',
      variants: Variants.of(variants),
      default: initialSelection(form),
      disabled: disabled.length ? disabled : false,
    })),
    environment: environmentSpec(form),
  })
}

/** The Delete Model Cache form: one cached model to delete, the selected one marked. */
export function cacheSpec(form: CacheForm) {
  const values: Record<string, string> = {}
  for (const model of form.models) {
    const mark = model.selected ? ', selected: vLLM serves it' : ''
    values[model.id] = `${model.id} (${humanBytes(model.bytes)}${mark})`
  }
  const first = form.models.find((m) => !m.selected) ?? form.models[0]
  const selected = form.models.filter((m) => m.selected).map((m) => m.id)
  return InputSpec.of({
    model: Value.dynamicSelect(() => ({
      name: 'Cached model',
      description:
        'Deleting a model frees its disk space (and shrinks backups); it is downloaded ' +
        'again if selected later. The selected model cannot be deleted: choose another ' +
        'with Set Model first.',
      values,
      default: first ? first.id : '',
      disabled: form.models.length === 0 ? 'No cached models' : selected.length ? selected : false,
    })),
  })
}
