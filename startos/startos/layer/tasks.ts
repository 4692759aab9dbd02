/** When init asks for a model (pure). */

/** vllmd's own wording of the task (CONTRACT §3, the `task` of health.json). */
export const SET_MODEL_REASON = 'Select which AI model vLLM should serve'

/** No store.json, or an empty `serveArgs`, means no model is selected (CONTRACT §1). */
export function needsModel(serveArgs: readonly string[] | null | undefined): boolean {
  return !serveArgs || serveArgs.length === 0
}
