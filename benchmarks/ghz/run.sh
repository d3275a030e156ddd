#!/usr/bin/env bash
# Load one lorag service with ghz, by server reflection alone (no --proto, no --protoset).
#
#   benchmarks/ghz/run.sh SERVICE [ghz options...]
#   benchmarks/ghz/run.sh embedding -z 10s -c 8 -O json
#
# SERVICE is one of gateway, embedding, indexer, retrieval, generation, training; its settings are in
# benchmarks/ghz/SERVICE.json (ghz --config format). Options given here override the file's. The target is
# $LORAG_<SERVICE>_ADDRESS when set, else the file's host (the local stack's default port). ghz is found on PATH,
# else in ~/.cache/lorag/bin (where `make setup` builds it), else in $GHZ.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
service="${1:-}"
if [[ -z "$service" || ! -f "$here/$service.json" ]]; then
    echo "usage: $0 SERVICE [ghz options...]; SERVICE is one of: $(cd "$here" && ls *.json | sed 's/\.json$//' | tr '\n' ' ')" >&2
    exit 2
fi
shift

ghz="${GHZ:-$(command -v ghz || echo "${LORAG_CACHE:-$HOME/.cache/lorag}/bin/ghz")}"
if [[ ! -x "$ghz" ]]; then
    echo "ghz not found (looked for \$GHZ, ghz on PATH, ${LORAG_CACHE:-$HOME/.cache/lorag}/bin/ghz): run make setup" >&2
    exit 1
fi

address_var="LORAG_${service^^}_ADDRESS"
address="${!address_var:-}"
exec "$ghz" --config "$here/$service.json" "$@" ${address:+"$address"}
