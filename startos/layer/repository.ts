/**
 * Where this repository is published (pure): the manifest's `packageRepo`, which `start-cli s9pk
 * pack` requires to be a URL.
 *
 * This package takes the id `vllm` and replaces Start9's package of that id; its dependents
 * install the npm package `vllm-startos` from this address (Open WebUI:
 * `github:Start9Labs/vllm-startos#next`). A fork sets PACKAGE_REPO when it packs.
 */
export const PACKAGE_REPO = 'https://github.com/Start9Labs/vllm-startos'

/** PACKAGE_REPO from the environment when it is an http(s) URL, else the published address. */
export function packageRepoOf(value: string | undefined): string {
  if (value === undefined || value === '') return PACKAGE_REPO
  if (!/^https?:\/\/\S+$/.test(value)) {
    throw new Error(
      `PACKAGE_REPO=${JSON.stringify(value)}: give the repository's http(s) URL, or leave it unset for ${PACKAGE_REPO}`,
    )
  }
  return value
}
