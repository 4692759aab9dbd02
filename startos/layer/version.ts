/**
 * The package's version, and the vLLM release it carries (pure).
 *
 * The version is a literal so that `VersionInfo.of` checks its ExVer form when TypeScript
 * compiles. Its upstream part is vLLM's release: `0.32.0:0` packs `v0.32.0`, the version
 * `containers/versions.env` pins for the images (the manifest test holds the two in step).
 */
export const PACKAGE_VERSION = '0.32.0:0'

/** `0.32.0:0` → `v0.32.0`: the image build argument VLLM_VERSION for a package version. */
export function vllmTagOf(version: string): string {
  const match = /^(\d+\.\d+\.\d+):\d+$/.exec(version)
  if (!match) {
    throw new Error(
      `startos/layer/version.ts: ${JSON.stringify(version)} is not a release like 0.32.0:0`,
    )
  }
  return `v${match[1]}`
}
