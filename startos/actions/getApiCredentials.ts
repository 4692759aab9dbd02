/** Get API Key: vllmd prints the key (creating it first when missing), masked and copyable. */
import { actionResult, getApiKeyCall } from '../layer/calls'
import { sdk } from '../sdk'
import { runVllmd } from '../vllmd'

export const getApiCredentials = sdk.Action.withoutInput(
  // the id Start9's package used: dependents' tasks and users' habits name it
  'get-api-credentials',
  async () => ({
    name: 'Get API Key',
    description:
      'Show the key clients send as a bearer token to the OpenAI-compatible API. It is made ' +
      'automatically, and made again if it goes missing; dependent services read it from ' +
      'the public volume.',
    warning: null,
    allowedStatuses: 'any',
    group: null,
    visibility: 'enabled',
  }),
  async ({ effects }) =>
    actionResult('Get API Key', await runVllmd(effects, getApiKeyCall, 'get-api-key')),
)
