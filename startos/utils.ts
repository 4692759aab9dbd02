/**
 * What dependents import to reach the API (Open WebUI: `from 'vllm-startos/startos/utils'`).
 *
 * This file imports nothing: a dependent compiles it under its own TypeScript and SDK, so it must
 * hold plain values only. The host id is the MultiHost the API is bound on (interfaces.ts), the
 * port is vllmd's fixed API port (docs/interfaces.md). Dependents dial `http://<bridge>:<port>/v1`.
 */

/** The MultiHost id of the API: dependents pass it to `sdk.host.getBridgeAddress`. */
export const apiHostId = 'api-multi'

/** The API's port inside the service. */
export const apiPort = 8000
