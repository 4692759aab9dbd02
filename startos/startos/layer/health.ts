/**
 * `vllmd health` → the result StartOS shows. Pure, and total: every input gives a result with a
 * message, nothing throws.
 *
 * vllmd owns the timing (its loading grace is 35 minutes, its cap 4 hours): loading stays
 * loading here, whatever the SDK's own grace period, and failure is vllmd's verdict.
 */
import type { Exec } from './calls'

export type Health =
  | { result: 'success'; message: string | null }
  | { result: 'loading'; message: string }
  | { result: 'failure'; message: string }

export const HEALTH_NAME = 'vLLM API'

export const NOT_RUNNING =
  'vllmd is not running, or has not reported its health yet. If this lasts, check the service logs.'
export const NOT_A_REPORT =
  'vllmd health answered something that is not a health report. Check the service logs.'
export const NOT_RUN = 'The health check could not run vllmd health. Check the service logs.'

function report(stdout: string): { result: string; message: string } | null {
  let parsed: unknown
  try {
    parsed = JSON.parse(stdout)
  } catch {
    return null
  }
  if (typeof parsed !== 'object' || parsed === null) return null
  const { result, message } = parsed as Record<string, unknown>
  if (typeof result !== 'string' || typeof message !== 'string' || !message) return null
  return { result, message }
}

/** The health StartOS shows for what running `vllmd health` gave (or the error it raised). */
export function healthOf(exec: Exec | Error): Health {
  if (exec instanceof Error) return { result: 'failure', message: NOT_RUN }
  if (exec.exitCode === 2) return { result: 'failure', message: NOT_RUNNING }
  if (exec.exitCode !== 0 && exec.exitCode !== 1) return { result: 'failure', message: NOT_RUN }
  const found = report(exec.stdout)
  if (found === null) return { result: 'failure', message: NOT_A_REPORT }
  // the exit code and the report must agree: 0 is success, 1 is loading or failure
  if (exec.exitCode === 0 && found.result === 'success') {
    return { result: 'success', message: found.message }
  }
  if (exec.exitCode === 1 && (found.result === 'loading' || found.result === 'failure')) {
    return { result: found.result, message: found.message }
  }
  return { result: 'failure', message: NOT_A_REPORT }
}
