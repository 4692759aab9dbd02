/**
 * Delete Model Cache: a choice of the cached models from `vllmd action delete-model-cache
 * --form`, then `--model ID`. vllmd refuses the selected model and anything outside the cache.
 */
import { actionResult, deleteModelCall } from '../layer/calls'
import { cacheSpec, parseCacheForm } from '../layer/forms'
import { sdk } from '../sdk'
import { runVllmd } from '../vllmd'

export const deleteModelCache = sdk.Action.withInput(
  'delete-model-cache',
  async () => ({
    name: 'Delete Model Cache',
    description:
      'Remove a downloaded model from the cache to free disk space, and to make backups ' +
      'smaller. It is downloaded again if selected later.',
    warning: 'The model files are deleted for good; selecting the model again downloads it.',
    allowedStatuses: 'any',
    group: null,
    visibility: 'enabled',
  }),
  async ({ effects }) => {
    const exec = await runVllmd(
      effects,
      { argv: ['action', 'delete-model-cache', '--form'], stdin: null },
      'delete-model-cache-form',
    )
    if (exec.exitCode !== 0) {
      throw new Error(exec.stderr.trim() || `vllmd exited with ${exec.exitCode}`)
    }
    return cacheSpec(parseCacheForm(exec.stdout))
  },
  async () => null,
  async ({ effects, input }) =>
    actionResult(
      'Delete Model Cache',
      await runVllmd(effects, deleteModelCall(String(input.model)), 'delete-model-cache'),
    ),
)
