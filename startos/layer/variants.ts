/**
 * The three variants of the package and what each asks of the host (pure data).
 *
 * The variant is chosen at build time by the VARIANT environment variable (`nvidia`, `rocm`,
 * `cpu`; the seed's table). Each image is built from `containers/Containerfile.<variant>` with
 * the vLLM release of the package version (`version.ts`), passed as the build argument the
 * Containerfiles declare.
 */
import type { T } from '@start9labs/start-sdk'

export const VARIANTS = ['nvidia', 'rocm', 'cpu'] as const
export type Variant = (typeof VARIANTS)[number]

/**
 * The variant named by `value` (VARIANT when the bundle loads). Unset means `cpu`, vllmd's own
 * default: StartOS loads the bundle again at run time without VARIANT, where nothing depends on
 * it (each image carries its variant as VLLMD_VARIANT). Any other value is an error, not a guess.
 */
export function variantOf(value: string | undefined): Variant {
  if (value === undefined || value === '') return 'cpu'
  const found = VARIANTS.find((v) => v === value)
  if (!found) {
    throw new Error(
      `VARIANT=${JSON.stringify(value ?? '')}: build with VARIANT set to one of ${VARIANTS.join(', ')}`,
    )
  }
  return found
}

/** The architectures an image is built for (tuples: the SDK's type lists the allowed orders). */
export type Arches = ['x86_64', 'aarch64'] | ['x86_64']

// ROCm is not offered on integrated Radeon graphics: match discrete AMD cards by product name.
// StartOS's regular expressions have no lookahead, so this lists what to accept.
const AMD_DISCRETE_GPU =
  '(?i)(Navi\\s*\\d+|Radeon\\s*RX\\s*\\d{3}|Radeon\\s*RX\\s*Vega|Radeon\\s*(Pro|VII)|Instinct)'

export type VariantConfig = {
  arch: Arches
  nvidiaContainer: boolean
  device: T.DeviceFilter[]
}

/**
 * The same for every variant, on purpose. The registry merges the variants of one version into
 * one entry and compares their shared metadata, `hardwareAcceleration` included, for equality: a
 * cpu variant saying false beside GPU variants saying true is refused at publish ("package
 * metadata mismatch"). Start9's reference package sets it true for all three for that reason.
 * What tells the variants apart is `hardwareRequirements`, which the registry keys per variant.
 */
export const HARDWARE_ACCELERATION = true

/** What each variant needs: architectures, GPU runtime, the device the host must have. */
export const VARIANT_CONFIG: Record<Variant, VariantConfig> = {
  nvidia: {
    arch: ['x86_64', 'aarch64'],
    nvidiaContainer: true,
    device: [
      {
        class: 'display',
        product: null,
        vendor: null,
        driver: 'nvidia',
        description: 'An NVIDIA GPU with the NVIDIA driver (and the NVIDIA Container Toolkit)',
      },
    ],
  },
  rocm: {
    arch: ['x86_64'],
    nvidiaContainer: false,
    device: [
      {
        class: 'display',
        product: AMD_DISCRETE_GPU,
        vendor: null,
        driver: 'amdgpu',
        description: 'A discrete AMD GPU supported by ROCm (integrated Radeon graphics are not)',
      },
    ],
  },
  cpu: {
    // x86_64 only: upstream's CPU image and its default build stage are amd64-only (the seed's
    // quick reference says so too), and CPU inference on arm64 boards is impractically slow.
    arch: ['x86_64'],
    nvidiaContainer: false,
    device: [],
  },
}

type ImageBase = {
  source: {
    dockerBuild: { workdir: string; dockerfile: string; buildArgs: Record<string, string> }
  }
  emulateMissingAs: null
  nvidiaContainer: boolean
}

/** An image as the manifest takes it: one of the SDK's architecture lists, never emulated. */
export type Image =
  (ImageBase & { arch: ['x86_64', 'aarch64'] }) | (ImageBase & { arch: ['x86_64'] })

/** The image of `variant`: built from its Containerfile with the pinned vLLM version. */
export function imageOf(variant: Variant, vllmVersion: string): Image {
  const config = VARIANT_CONFIG[variant]
  const base: ImageBase = {
    source: {
      dockerBuild: {
        // start-cli runs the build from the package root, the repository root: the context
        // holds vllmd/, config/ and pyproject.toml (.containerignore keeps the rest out).
        workdir: '.',
        dockerfile: `containers/Containerfile.${variant}`,
        buildArgs: { VLLM_VERSION: vllmVersion },
      },
    },
    // A GPU image emulated on another architecture would not reach its GPU: never emulate.
    emulateMissingAs: null,
    nvidiaContainer: config.nvidiaContainer,
  }
  const arch = config.arch
  return arch.length === 2 ? { ...base, arch } : { ...base, arch }
}
