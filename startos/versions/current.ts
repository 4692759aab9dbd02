import { IMPOSSIBLE, VersionInfo, type T } from '@start9labs/start-sdk'
import { storeText } from '../fileModels/store.json'
import { fromStart9Store } from '../layer/start9'
import { PACKAGE_VERSION } from '../layer/version'

/**
 * The update from any earlier `vllm` package, Start9's releases included (their 0.16 betas to
 * 0.31): store.json is made readable by vllmd (`layer/start9.ts`), and nothing else is touched.
 * The API key stays where their release left it (store.json, credentials.json or both); vllmd
 * adopts it on its first start, so the key dependents hold keeps working.
 */
async function fromEarlier({ effects }: { effects: T.Effects }) {
  const next = fromStart9Store(await storeText.read().once())
  if (next !== null) await storeText.write(effects, next)
}

/** This release: vLLM's version (`containers/versions.env`), then the package's revision. */
export const current = VersionInfo.of({
  version: PACKAGE_VERSION,
  releaseNotes: {
    en_US:
      'vLLM v0.32.0 under vllmd, in three variants (NVIDIA, AMD ROCm, CPU), replacing the ' +
      'previous vLLM package: the selected model, its arguments and the API key carry over, ' +
      'so Open WebUI keeps working. Model presets sized to this machine, health that reports ' +
      "a download's progress, and the key kept by vllmd.",
  },
  migrations: {
    // Every earlier version of the unflavored line (`<0.32.0:0`) updates through `up`.
    up: fromEarlier,
    down: IMPOSSIBLE,
    // Start9's NVIDIA builds of 0.20.0 were a flavor of their own (`#nvidia:0.20.0:…`).
    other: { '#nvidia': { up: fromEarlier } },
  },
})
