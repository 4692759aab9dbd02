/**
 * The service: one daemon, `vllmd run`, as init (PID 1) of its subcontainer, so that vllmd
 * owns signals and reaps vLLM's processes. Nothing here reads store.json: vllmd reconciles by
 * itself, and a reactive read would make StartOS re-run main, tearing vllmd down on every
 * Set Model.
 */
import { healthOf, HEALTH_NAME } from './layer/health'
import { SIGTERM_TIMEOUT_MS } from './layer/timing'
import { sdk } from './sdk'
import { daemonSubcontainer, runHealth } from './vllmd'

export const main = sdk.setupMain(async ({ effects }) => {
  const subcontainer = daemonSubcontainer(effects)
  return sdk.Daemons.of(effects).addDaemon('vllmd', {
    subcontainer,
    exec: {
      command: ['vllmd', 'run'],
      runAsInit: true,
      sigtermTimeout: SIGTERM_TIMEOUT_MS,
    },
    ready: {
      display: HEALTH_NAME,
      // vllmd reports loading for as long as loading is honest (up to its 35-minute grace and
      // 4-hour cap); the SDK's grace only softens early failures, such as the moment before
      // vllmd wrote its first report.
      gracePeriod: 30_000,
      fn: async () => healthOf(await runHealth(subcontainer)),
    },
    requires: [],
  })
})
