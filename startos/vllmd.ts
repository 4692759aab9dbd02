/**
 * The one place that touches a live StartOS: subcontainers and `effects`. Everything here runs
 * `vllmd` in a subcontainer of the package's image and hands back what it printed; the
 * decisions are the pure functions of `layer/`, which the tests run without StartOS.
 */
import type { T } from '@start9labs/start-sdk'
import type { Call, Exec } from './layer/calls'
import { DATA_MOUNT, IMAGE_ID, PUBLIC_MOUNT } from './layer/ids'
import { sdk } from './sdk'

/** An action's run is over well within this: the form reads a few small files. */
const ACTION_TIMEOUT_MS = 120_000
/** `vllmd health` reads one small file. */
const HEALTH_TIMEOUT_MS = 10_000

/** Both volumes where vllmd expects them (its defaults, CONTRACT §1). */
export function volumes() {
  return sdk.Mounts.of()
    .mountVolume({ volumeId: 'main', subpath: null, mountpoint: DATA_MOUNT, readonly: false })
    .mountVolume({ volumeId: 'public', subpath: null, mountpoint: PUBLIC_MOUNT, readonly: false })
}

/** The daemon's subcontainer: `vllmd run` is its init, health checks run inside it. */
export function daemonSubcontainer(effects: T.Effects) {
  return sdk.SubContainer.of(effects, { imageId: IMAGE_ID }, volumes(), 'vllmd')
}

export type DaemonSubcontainer = ReturnType<typeof daemonSubcontainer>

/** Run `vllmd ARGV` in a temporary subcontainer with both volumes; `stdin` goes to its input. */
export async function runVllmd(effects: T.Effects, call: Call, name: string): Promise<Exec> {
  return sdk.SubContainer.withTemp(effects, { imageId: IMAGE_ID }, volumes(), name, (sub) =>
    sub.exec(
      ['vllmd', ...call.argv],
      call.stdin === null ? {} : { input: call.stdin },
      ACTION_TIMEOUT_MS,
    ),
  ).then(toExec)
}

/** Run `vllmd health` inside the daemon's subcontainer (its run folder holds health.json). */
export async function runHealth(sub: DaemonSubcontainer): Promise<Exec | Error> {
  try {
    return toExec(await sub.exec(['vllmd', 'health'], {}, HEALTH_TIMEOUT_MS))
  } catch (error) {
    return error instanceof Error ? error : new Error(String(error))
  }
}

function toExec(result: {
  exitCode: number | null
  stdout: string | Buffer
  stderr: string | Buffer
}): Exec {
  return {
    exitCode: result.exitCode,
    stdout: result.stdout.toString(),
    stderr: result.stderr.toString(),
  }
}

/** store.json through the SDK's file helper, for init only. */
export { storeText } from './fileModels/store.json'
