/**
 * The package manifest: id `vllm`, one image per variant (VARIANT at build time), the `main`
 * (/data) and `public` (/public) volumes, and what each variant asks of the host.
 */
import { setupManifest } from '@start9labs/start-sdk'
import { IMAGE_ID } from '../layer/ids'
import { packageRepoOf } from '../layer/repository'
import { HARDWARE_ACCELERATION, VARIANT_CONFIG, imageOf, variantOf } from '../layer/variants'
import { PACKAGE_VERSION, vllmTagOf } from '../layer/version'

const variant = variantOf(process.env.VARIANT)
const config = VARIANT_CONFIG[variant]

export const manifest = setupManifest({
  id: 'vllm',
  title: 'vLLM',
  // The service's license (upstream vLLM's); this repository's own is in LICENSE.
  license: 'Apache-2.0',
  packageRepo: packageRepoOf(process.env.PACKAGE_REPO),
  upstreamRepo: 'https://github.com/vllm-project/vllm',
  marketingUrl: 'https://docs.vllm.ai/',
  donationUrl: null,
  description: {
    short: { en_US: 'OpenAI-compatible LLM inference server (vLLM)' },
    long: {
      en_US:
        'vLLM serves large language models through an OpenAI-compatible API, with paged ' +
        'attention, continuous batching and quantized models. This package runs it under ' +
        'vllmd, which keeps the API key, restarts vLLM when the model changes, offers the ' +
        'model presets that fit your hardware, and reports honest health while weights ' +
        'download and load. Weights are downloaded from Hugging Face on first start and ' +
        'served locally.',
    },
  },
  volumes: ['main', 'public'],
  images: { [IMAGE_ID]: imageOf(variant, vllmTagOf(PACKAGE_VERSION)) },
  hardwareAcceleration: HARDWARE_ACCELERATION,
  hardwareRequirements: { device: config.device },
  dependencies: {},
})
