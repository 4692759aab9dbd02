/**
 * `vllmd health` → the two results StartOS shows: the API's (`healthOf`) and a model download's
 * (`downloadHealthOf`). Pure, and total: every input gives a result with a message, nothing
 * throws.
 *
 * vllmd owns the timing (its loading grace is 35 minutes, its cap 4 hours): loading stays
 * loading here, whatever the SDK's own grace period, and failure is vllmd's verdict.
 */
import type { Exec } from './calls'
import { isRecord, parseRecord } from './json'

export type Health =
  | { result: 'success'; message: string | null }
  | { result: 'loading'; message: string }
  | { result: 'failure'; message: string }

export const HEALTH_NAME = 'vLLM API'
export const DOWNLOAD_NAME = 'Model download'
export const NO_DOWNLOAD = 'No download in progress'

export const NOT_RUNNING =
  'vllmd is not running, or has not reported its health yet. If this lasts, check the service logs.'
export const NOT_A_REPORT =
  'vllmd health answered something that is not a health report. Check the service logs.'
export const NOT_RUN = 'The health check could not run vllmd health. Check the service logs.'

type Report = {
  exitCode: 0 | 1
  result: string
  message: string
  detail: Record<string, unknown>
}

function report(exitCode: 0 | 1, stdout: string): Report | null {
  const parsed = parseRecord(stdout)
  if (parsed === null) return null
  const { result, message, detail } = parsed
  if (typeof result !== 'string' || typeof message !== 'string' || !message) return null
  return { exitCode, result, message, detail: isRecord(detail) ? detail : {} }
}

/** The report `vllmd health` printed, or the failure StartOS shows when there is none. */
function read(exec: Exec | Error): Report | Health {
  if (exec instanceof Error) return { result: 'failure', message: NOT_RUN }
  if (exec.exitCode === 2) return { result: 'failure', message: NOT_RUNNING }
  if (exec.exitCode !== 0 && exec.exitCode !== 1) return { result: 'failure', message: NOT_RUN }
  return report(exec.exitCode, exec.stdout) ?? { result: 'failure', message: NOT_A_REPORT }
}

/** The health StartOS shows for what running `vllmd health` gave (or the error it raised). */
export function healthOf(exec: Exec | Error): Health {
  const found = read(exec)
  if (!('detail' in found)) return found
  // the exit code and the report must agree: 0 is success, 1 is loading or failure
  if (found.exitCode === 0 && found.result === 'success') {
    return { result: 'success', message: found.message }
  }
  if (found.exitCode === 1 && (found.result === 'loading' || found.result === 'failure')) {
    return { result: found.result, message: found.message }
  }
  return { result: 'failure', message: NOT_A_REPORT }
}

/**
 * The "Model download" check, from the same `vllmd health` report: its `detail.fetch` while a
 * download runs (loading, with vllmd's sentence: done, total, rate, time left) or after one
 * failed (failure, with vllmd's reason and what to do); success when there is none.
 */
export function downloadHealthOf(exec: Exec | Error): Health {
  const found = read(exec)
  if (!('detail' in found)) return found
  const fetch = found.detail.fetch
  if (fetch === undefined || fetch === null) return { result: 'success', message: NO_DOWNLOAD }
  if (!isRecord(fetch)) return { result: 'failure', message: NOT_A_REPORT }
  const { message, error } = fetch
  if (error !== undefined && error !== null) {
    const why = isRecord(error) && typeof error.message === 'string' ? error.message : ''
    const text = typeof message === 'string' && message ? message : why
    return { result: 'failure', message: text || NOT_A_REPORT }
  }
  if (typeof message !== 'string' || !message) return { result: 'failure', message: NOT_A_REPORT }
  return { result: 'loading', message }
}
