/**
 * Backups hold both volumes: `main` (store.json and the model cache, so a restore needs no
 * download) and `public` (the API key, so dependents keep working). Model weights make backups
 * large: Delete Model Cache shrinks them (instructions.md says so).
 */
import { sdk } from './sdk'

export const { createBackup, restoreInit } = sdk.setupBackups(async () =>
  sdk.Backups.ofVolumes('main', 'public'),
)
