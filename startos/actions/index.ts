import { sdk } from '../sdk'
import { deleteModelCache } from './deleteModelCache'
import { getApiCredentials } from './getApiCredentials'
import { setModel } from './setModel'

export const actions = sdk.Actions.of()
  .addAction(getApiCredentials)
  .addAction(setModel)
  .addAction(deleteModelCache)
