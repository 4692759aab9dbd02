/**
 * The OpenAI-compatible API on port 8000 (type api, http). Dependents import API_HOST_ID and
 * API_INTERFACE_ID from here, and read the key from the `public` volume mounted read-only.
 */
import { API_HOST_ID, API_INTERFACE_ID, API_PORT } from './layer/ids'
import { sdk } from './sdk'

export {
  API_HOST_ID,
  API_INTERFACE_ID,
  API_PORT,
  CREDENTIALS_FILE,
  PUBLIC_VOLUME_ID,
} from './layer/ids'

export const setInterfaces = sdk.setupInterfaces(async ({ effects }) => {
  const host = sdk.MultiHost.of(effects, API_HOST_ID)
  const origin = await host.bindPort(API_PORT, { protocol: 'http' })
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
