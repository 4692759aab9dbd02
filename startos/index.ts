/** What StartOS loads: the lifecycle functions and the manifest `start-cli s9pk pack` reads. */
import { buildManifest } from '@start9labs/start-sdk'
import { manifest as sdkManifest } from './manifest'
import { versionGraph } from './versions'

export { createBackup } from './backups'
export { main } from './main'
export { init, uninit } from './init'
export { actions } from './actions'
export const manifest = buildManifest(versionGraph, sdkManifest)
