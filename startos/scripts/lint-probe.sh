#!/usr/bin/env bash
# The SDK's lint passes when it finds no file, so prove it runs: lint a package folder holding
# one known violation (a Promise in a template literal) and expect it to fail.
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
echo "lint probe: the SDK's lint refuses a known violation, as it should"
