#!/usr/bin/env bash
# A dependent compiles and bundles against this package as Open WebUI does: TypeScript 6,
# start-sdk 2.0.9, `vllm-startos` installed the way npm installs a git dependency (the root
# packed by npm: `files` decides what it holds, then that tarball installed), a tsconfig that
# includes `node_modules/**/startos`, so all of our startos/ compiles under its TypeScript. Its
# bundle must yield the host id `api-multi` and the port 8000.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=node_modules/.consumer   # under node_modules: ignored, and cleaned with it

# The consumer's own installs are cached by its lockfile, like ours (npm ci costs seconds).
mkdir -p "$work"
cp tests/consumer/package.json tests/consumer/package-lock.json tests/consumer/tsconfig.json "$work/"
rm -rf "$work/startos" "$work/javascript" && cp -r tests/consumer/startos "$work/startos"
stamp=$work/node_modules/.lock-sha256
want=$(sha256sum tests/consumer/package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    (cd "$work" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
fi

# npm packs a git dependency from its checkout with the same packlist as `npm pack` (no prepare
# script here, so nothing is built first); --install-links makes npm do exactly that for a folder.
rm -rf "$work/node_modules/vllm-startos"
(cd "$work" && npm install --no-save --install-links --no-audit --no-fund --loglevel=error "$root")
packed=$work/node_modules/vllm-startos
for needed in startos/utils.ts startos/index.ts package.json; do
    [[ -f $packed/$needed ]] || { echo "the packed package lacks $needed" >&2; exit 1; }
done
for unwanted in vllmd tests startos/test pyproject.toml containers node_modules; do
    [[ ! -e $packed/$unwanted ]] || { echo "the packed package holds $unwanted" >&2; exit 1; }
done

(cd "$work" && npm run --silent check && npm run --silent build >/dev/null)
node -e '
  const { vllm } = require(process.argv[1])
  if (vllm.hostId !== "api-multi" || vllm.internalPort !== 8000) {
    console.error("the consumer bundle yields", JSON.stringify(vllm))
    process.exit(1)
  }
  console.log("consumer: compiled with TypeScript", require(process.argv[2]).version,
    "and bundled:", JSON.stringify(vllm))
' "$root/$work/javascript/index.js" "$root/$work/node_modules/typescript/package.json"
