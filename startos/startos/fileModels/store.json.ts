/**
 * `DATA/store.json`, read by init only (never by main: a reactive read there would restart
 * vllmd on every Set Model, and vllmd applies changes by itself). vllmd writes the file; the
 * layer only asks whether a model is selected: a non-empty `serveArgs` (CONTRACT §1).
 */
import { FileHelper, z } from '@start9labs/start-sdk'
import { sdk } from '../sdk'

const shape = z.object({
  serveArgs: z.array(z.string()).optional().catch(undefined),
})

export const storeJson = FileHelper.json({ base: sdk.volumes.main, subpath: 'store.json' }, shape)
