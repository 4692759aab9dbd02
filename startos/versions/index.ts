import { VersionGraph } from '@start9labs/start-sdk'
import { current } from './current'

/**
 * One release so far. Its `up` migrates from every earlier version (the SDK gives the oldest
 * release of a line an edge from everything below it), Start9's releases included.
 */
export const versionGraph = VersionGraph.of({ current, other: [] })
