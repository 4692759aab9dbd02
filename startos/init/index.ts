/**
 * Init, on install, update, restore and every start: interfaces, actions, and a critical Set
 * Model task whenever no model is selected. store.json is read here through the SDK's file
 * helper (init re-runs when it changes), never in main. The API key is vllmd's job.
 */
import { actions } from '../actions'
import { setModel } from '../actions/setModel'
import { restoreInit } from '../backups'
import { setInterfaces } from '../interfaces'
import { needsModel, SET_MODEL_REASON } from '../layer/tasks'
import { sdk } from '../sdk'
import { versionGraph } from '../versions'
import { storeText } from '../vllmd'

const selectModelTask = sdk.setupOnInit(async (effects) => {
  if (needsModel(await storeText.read().const(effects))) {
    await sdk.action.createOwnTask(effects, setModel, 'critical', { reason: SET_MODEL_REASON })
  }
})

export const init = sdk.setupInit(
  restoreInit,
  versionGraph,
  setInterfaces,
  actions,
  selectModelTask,
)

export const uninit = sdk.setupUninit(versionGraph)
