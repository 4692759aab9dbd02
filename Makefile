# Packs the variants with start-cli (not on npm: see docs/startos-package.md). The SDK's s9pk.mk
# does the work: npm ci, check, lint and bundle, then `start-cli s9pk pack` per architecture.
# Overrides of s9pk.mk (TARGETS, ARCHES) must come before the include.
#
# One leaf target per variant and architecture, as Start9's reference package splits them, so a
# release matrix runs one runner per target: packing both NVIDIA architectures on one runner ran
# out of disk. rocm and cpu exist for x86_64 only (upstream's images).
TARGETS := nvidia-x86 nvidia-arm rocm-x86 cpu-x86
ARCHES := x86 arm

include node_modules/@start9labs/start-sdk/s9pk.mk

.PHONY: nvidia nvidia-x86 nvidia-arm rocm rocm-x86 cpu cpu-x86 pack-inputs

# A whole variant, every architecture it has.
nvidia: nvidia-x86 nvidia-arm
rocm: rocm-x86
cpu: cpu-x86

# Each leaf packs one s9pk, vllm_<variant>_<arch>.s9pk: VARIANT picks the manifest's image and the
# artifact's name (s9pk.mk), the arch target (x86, arm) the architecture.
nvidia-x86: pack-inputs ; VARIANT=nvidia $(MAKE) x86
nvidia-arm: pack-inputs ; VARIANT=nvidia $(MAKE) arm
rocm-x86: pack-inputs ; VARIANT=rocm $(MAKE) x86
cpu-x86: pack-inputs ; VARIANT=cpu $(MAKE) x86

# What start-cli reads besides the bundle (whose rule is s9pk.mk's): an icon, a license, the
# instructions, the assets folder, and the build context's Containerfiles. Listed here so a
# missing one stops make before the pack, also where start-cli is absent (`make -n`).
pack-inputs: icon.svg LICENSE instructions.md assets/README.md \
    containers/Containerfile.nvidia containers/Containerfile.rocm containers/Containerfile.cpu \
    javascript/index.js
