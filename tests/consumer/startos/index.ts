// What Open WebUI's startos/backends.ts takes from this package: the API's MultiHost id and port.
import { apiHostId as vllmHostId, apiPort as vllmPort } from 'vllm-startos/startos/utils'

export const vllm = { hostId: vllmHostId, internalPort: vllmPort, pathSuffix: '/v1' }
