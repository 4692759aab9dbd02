#!/usr/bin/env bash
# Every check of the StartOS package this machine allows, in the order the SDK's s9pk.mk runs
# them before `start-cli s9pk pack` (which needs start-cli and a container runtime, and is not
# run here): install from the lockfile, type-check and lint against the real start-sdk, bundle,
# then the manifest of each variant and the layer's own tests. Run from anywhere; works at the
# repository root, which is the package root.
set -euo pipefail
cd "$(dirname "$0")/.."

# npm ci deletes and reinstalls node_modules every time (seconds of the check's budget): skip it
# while node_modules was installed from this very lockfile.
stamp=node_modules/.lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" >"$stamp"
fi
npm run --silent check         # tsc --noEmit
npm run --silent lint          # the SDK's lint.mjs over startos/**/*.ts
scripts/lint-probe.sh          # ... and that lint is live: a known violation fails it
npm run --silent format:check  # prettier, with the settings in package.json
npm run --silent build         # the bundle StartOS loads, with @vercel/ncc
npm test                       # node --test: manifests per variant, health, calls, forms, structure, update
