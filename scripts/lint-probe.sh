#!/usr/bin/env bash
# The checks pass when they find nothing, so prove they look: the SDK's lint must refuse a known
# violation (a Promise in a template literal), and tsc must refuse a package version that is not
# ExVer (VersionInfo.of checks the literal's form at compile time, which is why the version is a
# literal and never cast).
set -euo pipefail
cd "$(dirname "$0")/.."
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
mkdir "$probe/startos"
ln -s "$PWD/node_modules" "$probe/node_modules"
printf '{"extends": "./node_modules/@start9labs/start-sdk/tsconfig.base.json", "include": ["startos/**/*.ts"]}\n' \
    > "$probe/tsconfig.json"

printf "const pending = Promise.resolve('x')\nexport const text = \`\${pending}\`\n" \
    > "$probe/startos/probe.ts"
if (cd "$probe" && node node_modules/@start9labs/start-sdk/lint.mjs >/dev/null 2>&1); then
    echo "the SDK's lint passed a known violation: it is not checking startos/**/*.ts" >&2
    exit 1
fi

# line 3 holds the version: the error must be there, so the probe fails for that reason only
printf "%s\n" "import { IMPOSSIBLE, VersionInfo } from '@start9labs/start-sdk'" \
    "export const v = VersionInfo.of({" \
    "  version: '0.32.0'," \
    "  releaseNotes: { en_US: 'x' }," \
    "  migrations: { up: async () => {}, down: IMPOSSIBLE }," \
    "})" >"$probe/startos/probe.ts"
if out=$(cd "$probe" && node_modules/.bin/tsc --noEmit --pretty false 2>&1); then
    echo "tsc accepted the version '0.32.0' (no revision): the SDK no longer checks it" >&2
    exit 1
fi
if [[ $out != *"probe.ts(3,"*"TS2322"* ]]; then
    printf "the version probe failed for another reason:\n%s\n" "$out" >&2
    exit 1
fi
echo "probes: the SDK's lint refuses a known violation, tsc a version that is not ExVer"
