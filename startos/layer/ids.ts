/**
 * Names other code relies on: the interface id, the daemon's and health checks' ids, the volumes'
 * mount points, the image. The host id and port dependents import live in `../utils.ts`.
 */

/** The one image of every variant. */
export const IMAGE_ID = 'vllm'

/** The service interface id of the OpenAI-compatible API (on the MultiHost `apiHostId`). */
export const API_INTERFACE_ID = 'api'

/**
 * The daemon's id, which is also its ready check's id: dependents require the health check
 * `primary` (Open WebUI's `healthChecks: ['primary']`).
 */
export const DAEMON_ID = 'primary'

/** The second health check: a model download's progress, or its error (`vllmd health`). */
export const DOWNLOAD_CHECK_ID = 'model-download'

/** Where each volume is mounted in vllmd's subcontainers (vllmd's defaults). */
export const DATA_MOUNT = '/data'
export const PUBLIC_MOUNT = '/public'

/**
 * Dependents mount the `public` volume read-only (`mountDependency`, volumeId `public`) and read
 * `credentials.json` there: `{"apiKey": "<22 letters and digits>"}`.
 */
export const PUBLIC_VOLUME_ID = 'public'
export const CREDENTIALS_FILE = 'credentials.json'
