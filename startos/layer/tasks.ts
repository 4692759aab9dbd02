/** When init asks for a model (pure). */

/** vllmd's own wording of the task (CONTRACT §3, the `task` of health.json). */
export const SET_MODEL_REASON = 'Select which AI model vLLM should serve'

/**
 * Whether Set Model is needed, from the text of store.json (`null`: no file). No file, or an
 * empty `serveArgs`, means no model is selected (CONTRACT §1); a file that does not parse, or
 * whose `serveArgs` is not a list of strings, cannot start one either, and Set Model replaces it
 * (the layer runs it with --force, which moves the unreadable file aside).
 */
export function needsModel(storeText: string | null): boolean {
  if (storeText === null) return true
  let store: unknown
  try {
    store = JSON.parse(storeText)
  } catch {
    return true
  }
  if (typeof store !== 'object' || store === null || Array.isArray(store)) return true
  const args = (store as Record<string, unknown>).serveArgs
  return !Array.isArray(args) || args.length === 0 || !args.every((a) => typeof a === 'string')
}
