/**
 * `DATA/store.json` as text, read by init (never by main: a reactive read there would restart
 * vllmd on every Set Model, and vllmd applies changes by itself) and rewritten only by the update
 * from an earlier release (`versions/current.ts`). vllmd writes the file; the layer only asks
 * whether a model is selected (layer/tasks.ts decides, from the text, so that a file that does
 * not parse is an answer rather than an exception in init).
 */
import { FileHelper } from '@start9labs/start-sdk'
import { sdk } from '../sdk'

export const storeText = FileHelper.string({ base: sdk.volumes.main, subpath: 'store.json' })
