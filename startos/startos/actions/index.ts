import { sdk } from '../sdk'
import { deleteModelCache } from './deleteModelCache'
import { getApiKey } from './getApiKey'
import { setModel } from './setModel'

export const actions = sdk.Actions.of()
  .addAction(getApiKey)
  .addAction(setModel)
  .addAction(deleteModelCache)
