#!/usr/bin/env bash
# Build one image with whichever engine is present: containers/build.sh nvidia|rocm|cpu [FLAGS...]
#
# Podman is preferred, then docker; CONTAINER_ENGINE picks one. Extra FLAGS go to the engine's
# build command; IMAGE_TAG names the result (default vllmd:VARIANT). The vLLM version comes from
# containers/versions.env.
set -euo pipefail

variant=${1:?usage: containers/build.sh nvidia|rocm|cpu [FLAGS...]}
shift
cd "$(dirname "$0")/.."
if [[ ! -f containers/Containerfile.$variant ]]; then
    echo "containers/build.sh: no variant '$variant' (nvidia, rocm or cpu)" >&2
    exit 2
fi
# shellcheck source=versions.env
source containers/versions.env

engine=${CONTAINER_ENGINE:-$(command -v podman || command -v docker || true)}
if [[ -z $engine ]]; then
    echo "containers/build.sh: neither podman nor docker is installed (or set CONTAINER_ENGINE)" >&2
    exit 1
fi

flags=()
case $(basename "$engine") in
    podman | buildah)
        # Their default OCI format has no HEALTHCHECK or SHELL: both would be dropped with only
        # a warning, and the image would have no health check.
        flags+=(--format docker)
        # Behind a proxy that re-signs TLS, pip inside the build trusts what the host trusts.
        ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
        if [[ -f $ca ]]; then
            flags+=(--volume "$ca:/etc/ssl/certs/ca-certificates.crt:ro")
        fi
        ;;
esac

exec "$engine" build "${flags[@]}" "$@" \
    --file "containers/Containerfile.$variant" \
    --build-arg "VLLM_VERSION=$VLLM_VERSION" \
    --tag "${IMAGE_TAG:-vllmd:$variant}" \
    .
