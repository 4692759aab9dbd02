/** When init asks for a model (pure). */
import { parseRecord } from './json'

/** vllmd's own wording of the task (CONTRACT §3, the `task` of health.json). */
export const SET_MODEL_REASON = 'Select which AI model vLLM should serve'

/**
 * Whether Set Model is needed, from the text of store.json (`null`: no file). No file, or an
 * empty `serveArgs`, means no model is selected (CONTRACT §1); a file that does not parse, or
 * whose `serveArgs` is not a list of strings, cannot start one either, and Set Model replaces it
 * (the layer runs it with --force, which moves the unreadable file aside).
 */
export function needsModel(storeText: string | null): boolean {
  const store = parseRecord(storeText)
  if (store === null) return true
  const args = store.serveArgs
  return !Array.isArray(args) || args.length === 0 || !args.every((a) => typeof a === 'string')
}
