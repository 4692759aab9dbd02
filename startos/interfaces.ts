/**
 * The OpenAI-compatible API on port 8000 (type api, http), interface `api` on the MultiHost
 * `api-multi`. Dependents import the host id and port from `utils.ts` and read the key from the
 * `public` volume mounted read-only.
 */
import { API_INTERFACE_ID } from './layer/ids'
import { sdk } from './sdk'
import { apiHostId, apiPort } from './utils'

export { API_INTERFACE_ID, CREDENTIALS_FILE, PUBLIC_VOLUME_ID } from './layer/ids'

export const setInterfaces = sdk.setupInterfaces(async ({ effects }) => {
  const host = sdk.MultiHost.of(effects, apiHostId)
  const origin = await host.bindPort(apiPort, { protocol: 'http' })
  const api = sdk.createInterface(effects, {
    name: 'vLLM API',
    id: API_INTERFACE_ID,
    description:
      'OpenAI-compatible API (append /v1 for clients). Send the key from Get API Key as a ' +
      'bearer token.',
    type: 'api',
    masked: false,
    schemeOverride: null,
    username: null,
    path: '',
    query: {},
  })
  return [await origin.export([api])]
})
