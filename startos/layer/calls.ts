/**
 * What each action asks vllmd to do: form input → vllmd's argv (and standard input), and
 * vllmd's answer → the ActionResult StartOS shows. Pure.
 *
 * Secrets never go on a command line: other processes in the container can read it, and the
 * SDK passes exec environment variables as start-container arguments. Set Model's environment
 * values go to `vllmd action set-model --env-stdin` on standard input.
 */
import type { T } from '@start9labs/start-sdk'
import { CUSTOM, ENV_NAME, type SetModelForm } from './forms'

/** One vllmd invocation: its arguments after `vllmd`, and what to write to its standard input. */
export type Call = { argv: string[]; stdin: string | null }

/** What StartOS hands Set Model's run after its own validator accepted it. */
export type SetModelInput = {
  model: { selection: string; value: { args?: string | null } }
  environment:
    | { selection: 'keep'; value: Record<string, never> }
    | {
        selection: 'replace'
        value: { variables: { name: string; value?: string | null }[] }
      }
}

/** The `--env-stdin` text for `variables`; an Error names the bad entry, never its value. */
export function envLines(variables: { name: string; value?: string | null }[]): string {
  const seen = new Set<string>()
  return variables
    .map(({ name, value }, index) => {
      const where = `Environment variable ${index + 1}`
      if (!ENV_NAME.test(name)) {
        throw new Error(
          `${where}: the name must be letters, digits and underscores, not starting with a digit`,
        )
      }
      if (seen.has(name)) throw new Error(`${where}: ${name} is given twice`)
      seen.add(name)
      const text = value ?? ''
      // one variable per line: a line break in a value would smuggle in another variable
      if (/[\r\n\0]/.test(text)) {
        throw new Error(`${where} (${name}): the value cannot contain a line break`)
      }
      return `${name}=${text}\n`
    })
    .join('')
}

/**
 * `vllmd action set-model …` for the form's input. Always with --force: a store.json that does
 * not parse is moved aside (kept, as store.json.invalid-<time>) rather than refused, since a
 * StartOS user has no shell to repair it.
 */
export function setModelCall(input: SetModelInput, form: SetModelForm | null): Call {
  const argv = ['action', 'set-model', '--force']
  const { selection, value } = input.model
  if (selection === CUSTOM) {
    const args = (value.args ?? '').trim()
    if (!args) throw new Error('Custom: give the `vllm serve` arguments, the model id first')
    argv.push('--custom', args)
  } else {
    const preset = form?.presets.find((p) => p.id === selection)
    if (form && !preset) throw new Error(`${selection} is not a preset of this vllmd`)
    if (preset && !preset.fits) {
      throw new Error(`${preset.name} does not fit this machine: ${preset.reason}`)
    }
    argv.push('--preset', selection)
  }
  if (input.environment.selection === 'replace') {
    argv.push('--env-stdin')
    return { argv, stdin: envLines(input.environment.value.variables) }
  }
  return { argv, stdin: null }
}

/** `vllmd action delete-model-cache --model ID`. */
export function deleteModelCall(model: string): Call {
  if (!model) throw new Error('Choose a cached model to delete')
  return { argv: ['action', 'delete-model-cache', '--model', model], stdin: null }
}

/** `vllmd action get-api-key`. */
export const getApiKeyCall: Call = { argv: ['action', 'get-api-key'], stdin: null }

/** What running vllmd gave: its exit code and output, or why it could not run. */
export type Exec = { exitCode: number | null; stdout: string; stderr: string }

function isMember(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false
  const v = value as Record<string, unknown>
  if (typeof v.name !== 'string') return false
  if (!(v.description === null || typeof v.description === 'string')) return false
  return isValue(v)
}

function isValue(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false
  const v = value as Record<string, unknown>
  if (v.type === 'single') {
    return (
      typeof v.value === 'string' &&
      typeof v.copyable === 'boolean' &&
      typeof v.qr === 'boolean' &&
      typeof v.masked === 'boolean'
    )
  }
  return v.type === 'group' && Array.isArray(v.value) && v.value.every(isMember)
}

/** Whether `value` is an ActionResult version 1, as StartOS shows it. */
export function isActionResult(value: unknown): value is T.ActionResult & { version: '1' } {
  if (typeof value !== 'object' || value === null) return false
  const v = value as Record<string, unknown>
  return (
    v.version === '1' &&
    typeof v.title === 'string' &&
    (v.message === null || typeof v.message === 'string') &&
    (v.result === null || isValue(v.result))
  )
}

/**
 * vllmd's answer as the ActionResult to show. Exit 1 is a user error whose text (stderr) says
 * what to do: it becomes the Error StartOS shows. Anything else that is not a well-formed
 * result is an Error that says so, without echoing the output (it may hold the key).
 */
export function actionResult(name: string, exec: Exec): T.ActionResult & { version: '1' } {
  if (exec.exitCode !== 0) {
    const said = exec.stderr.trim().replace(/^vllmd action [a-z-]+: /, '')
    if (exec.exitCode === 1 && said) throw new Error(said)
    throw new Error(`${name}: vllmd exited with ${exec.exitCode ?? 'a signal'}; see the logs`)
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(exec.stdout)
  } catch {
    throw new Error(`${name}: vllmd did not answer with JSON; see the logs`)
  }
  if (!isActionResult(parsed)) {
    throw new Error(`${name}: vllmd answered with something that is not an action result`)
  }
  return parsed
}
