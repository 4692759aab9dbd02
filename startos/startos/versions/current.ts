import { IMPOSSIBLE, VersionInfo } from '@start9labs/start-sdk'
import { packageVersion } from '../layer/variants'
import { VLLM_VERSION } from '../versions.generated'

/** This release: vLLM's version (from containers/versions.env), then the package's revision. */
export const current = VersionInfo.of({
  // The type asks for a literal to check at compile time; this one is built from
  // versions.env at load time and checked by packageVersion (and the manifest test) instead.
  version: packageVersion(VLLM_VERSION, 0) as '0.0.0:0',
  releaseNotes: {
    en_US:
      `First release: vLLM ${VLLM_VERSION} under vllmd, in three variants (NVIDIA, ROCm, ` +
      'CPU), with model presets sized to the hardware, the API key kept by vllmd, and ' +
      'health that reports loading while weights download.',
  },
  migrations: {
    up: async () => {},
    down: IMPOSSIBLE,
  },
})
