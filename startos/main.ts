/**
 * The service: one daemon, `primary`, running `vllmd run` as init (PID 1) of its subcontainer, so
 * that vllmd owns signals and reaps vLLM's processes; its ready check is the API's health, and a
 * second check shows a model download. Nothing here reads store.json: vllmd reconciles by
 * itself, and a reactive read would make StartOS re-run main, tearing vllmd down on every Set
 * Model.
 */
import { DAEMON_ID, DOWNLOAD_CHECK_ID } from './layer/ids'
import { DOWNLOAD_NAME, downloadHealthOf, healthOf, HEALTH_NAME } from './layer/health'
import { SIGTERM_TIMEOUT_MS } from './layer/timing'
import { sdk } from './sdk'
import { daemonSubcontainer, runHealth } from './vllmd'

// The SDK's grace only softens early failures, such as the moment before vllmd wrote its first
// report; vllmd reports loading for as long as loading is honest (its 35-minute grace, 4-hour cap).
const GRACE_MS = 30_000

export const main = sdk.setupMain(async ({ effects }) => {
  const subcontainer = daemonSubcontainer(effects)
  return sdk.Daemons.of(effects)
    .addDaemon(DAEMON_ID, {
      subcontainer,
      exec: {
        command: ['vllmd', 'run'],
        runAsInit: true,
        sigtermTimeout: SIGTERM_TIMEOUT_MS,
      },
      ready: {
        display: HEALTH_NAME,
        gracePeriod: GRACE_MS,
        fn: async () => healthOf(await runHealth(subcontainer)),
      },
      requires: [],
    })
    .addHealthCheck(DOWNLOAD_CHECK_ID, {
      ready: {
        display: DOWNLOAD_NAME,
        gracePeriod: GRACE_MS,
        fn: async () => downloadHealthOf(await runHealth(subcontainer)),
        // a moving download is worth a fresh figure every few seconds; the SDK's default
        // polls every 30 s once a check is loading
        trigger: sdk.trigger.statusTrigger(30_000, {
          starting: 5_000,
          loading: 5_000,
          failure: 5_000,
        }),
      },
      // not `primary`: the download runs before the API can be ready
      requires: [],
    })
})
