/**
 * Names other code relies on: dependents import the interface and host ids, the volumes are
 * mounted by path, the image is named once.
 */

/** The one image of every variant. */
export const IMAGE_ID = 'vllm'

/** The API's port inside the service: vllmd's default, fixed (CONTRACT §1). */
export const API_PORT = 8000

/** The host (MultiHost id) the API is bound on; dependents reach the API through it. */
export const API_HOST_ID = 'api'

/** The service interface id of the OpenAI-compatible API. */
export const API_INTERFACE_ID = 'api'

/** Where each volume is mounted in vllmd's subcontainers (vllmd's defaults). */
export const DATA_MOUNT = '/data'
export const PUBLIC_MOUNT = '/public'

/**
 * Dependents mount the `public` volume read-only (`mountDependency`, volumeId `public`) and read
 * `credentials.json` there: `{"apiKey": "<22 letters and digits>"}`.
 */
export const PUBLIC_VOLUME_ID = 'public'
export const CREDENTIALS_FILE = 'credentials.json'
