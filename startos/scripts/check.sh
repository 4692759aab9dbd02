#!/usr/bin/env bash
# Every check of the StartOS package this machine allows, in the order the SDK's s9pk.mk runs
# them before `start-cli s9pk pack` (which needs start-cli and a container runtime, and is not
# run here): install from the lockfile, type-check and lint against the real start-sdk, bundle,
# then the manifest of each variant and the layer's own tests.
set -euo pipefail
cd "$(dirname "$0")/.."

npm ci --no-audit --no-fund --loglevel=error
npm run --silent check   # containers/versions.env -> startos/versions.generated.ts, then tsc --noEmit
npm run --silent lint    # the SDK's lint.mjs over startos/**/*.ts
scripts/lint-probe.sh    # ... and that lint is live: a known violation fails it
npm run --silent format:check  # prettier, with the settings in package.json
npm run --silent build   # the bundle StartOS loads, with @vercel/ncc
npm test                 # node --test: manifests per variant, health, calls, forms, structure
