#!/usr/bin/env bash
# Installs everything lorag needs, idempotently, saying what it does:
#   - Python deps into .venv from the exact pins in requirements/lock.txt, then the workspace members editable;
#   - tools and slow builds into a cache outside the checkout ($LORAG_CACHE, default ~/.cache/lorag):
#     Weaviate (go install, ~5 min once), grpcurl and ghz (<1 min each), helm (~1-2 min), Jaeger (~5 min once),
#     buf (npm);
#   - docker-compose (Debian package) to validate the compose file statically, when apt can install it.
# Re-running does only what is missing or stale.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${LORAG_CACHE:-$HOME/.cache/lorag}
BIN=$CACHE/bin
mkdir -p "$BIN"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

WEAVIATE_VERSION=v1.39.0
GRPCURL_VERSION=v1.9.4
GHZ_VERSION=v0.121.0
HELM_VERSION=v3.22.0
JAEGER_VERSION=v1.76.0
BUF_VERSION=1.75.0

# --- Python ------------------------------------------------------------------------------------------------
if command -v uv >/dev/null 2>&1; then
  uv() { command uv "$@"; }
else
  if ! python3 -m uv --version >/dev/null 2>&1; then
    say "installing uv (pip)"
    python3 -m pip install --quiet uv
  fi
  uv() { python3 -m uv "$@"; }
fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv (Python 3.11)"
  uv venv --quiet --python 3.11 .venv
fi
stamp=.venv/.lorag-lock.sha256
want=$(cat requirements/lock.txt libs/*/pyproject.toml services/*/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing pinned Python dependencies (first run downloads torch, about 2-5 minutes)"
  uv pip sync --python .venv/bin/python requirements/lock.txt
  members=()
  for d in libs/* services/*; do [ -f "$d/pyproject.toml" ] && members+=(-e "$d"); done
  say "installing workspace packages: ${members[*]}"
  uv pip install --quiet --python .venv/bin/python --no-deps "${members[@]}"
  echo "$want" > "$stamp"
else
  say "Python dependencies up to date"
fi

# --- Go tools (cached outside the checkout) ------------------------------------------------------------------
go_tool() {  # name module version duration (how long its first build takes, for the message)
  local name=$1 module=$2 version=$3 duration=$4 marker="$BIN/.$1.version"
  if [ -x "$BIN/$name" ] && [ "$(cat "$marker" 2>/dev/null)" = "$version" ]; then
    say "$name $version cached in $BIN"; return
  fi
  say "building $name $version with go install ($duration once, cached in $BIN)"
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "$module@$version"
  echo "$version" > "$marker"
}
go_tool weaviate-server github.com/weaviate/weaviate/cmd/weaviate-server "$WEAVIATE_VERSION" "about 5 minutes"
go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION" "under a minute"
go_tool ghz github.com/bojand/ghz/cmd/ghz "$GHZ_VERSION" "under a minute"
go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "1 to 2 minutes"

# Jaeger's module has replace directives, so `go install` refuses it; it builds as a tool of a small module.
if [ -x "$BIN/jaeger" ] && [ "$(cat "$BIN/.jaeger.version" 2>/dev/null)" = "$JAEGER_VERSION" ]; then
  say "jaeger $JAEGER_VERSION cached in $BIN"
else
  say "building jaeger $JAEGER_VERSION (about 5 minutes once, cached in $BIN)"
  build=$CACHE/build/jaeger
  rm -rf "$build" && mkdir -p "$build"
  (cd "$build" && go mod init lorag.dev/jaeger-tool >/dev/null 2>&1 \
    && go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" \
    && go build -o "$BIN/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger)
  echo "$JAEGER_VERSION" > "$BIN/.jaeger.version"
fi

# --- docker-compose v1 (Debian), only to validate docker-compose.yml without an engine -----------------------
if ! command -v docker-compose >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing docker-compose (apt) to validate the compose file"
    (apt-get install -y -qq docker-compose >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq docker-compose >/dev/null 2>&1; }) \
      || say "docker-compose could not be installed; the compose check will say so"
  else
    say "docker-compose missing and apt unavailable; the compose check will say so"
  fi
fi

# --- buf (npm, cached outside the checkout) ------------------------------------------------------------------
if [ ! -x "$CACHE/node/node_modules/.bin/buf" ] || ! "$CACHE/node/node_modules/.bin/buf" --version 2>/dev/null | grep -q "^$BUF_VERSION"; then
  say "installing buf $BUF_VERSION (npm)"
  mkdir -p "$CACHE/node"
  npm install --silent --no-audit --no-fund --prefix "$CACHE/node" "@bufbuild/buf@$BUF_VERSION"
fi
ln -sf "$CACHE/node/node_modules/.bin/buf" "$BIN/buf"
say "buf $("$BIN/buf" --version) ready"
say "done: .venv ready, tools in $BIN"
