#!/usr/bin/env bash
# `make demo`: the main job on embedded defaults. Starts the local stack (Weaviate and every service, in the
# background), embeds, ingests lorag's own docs, retrieves from them, and asks three questions answered with
# citations and per-stage timings, the way an application would; then leaves the stack running for you.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
lorag=.venv/bin/lorag
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "starting the local stack (first start loads the models: about 30 s)"
$lorag up

step "embedding through the embedding endpoint (lorag embed → EmbeddingService/Embed)"
$lorag embed \
  "lorag adapts an LLM to an organisation: RAG for what it must know, LoRA for how it must behave." \
  "Weaviate stores the chunk vectors and answers hybrid BM25 + vector queries." \
  "What does lorag use Weaviate for?" --query

step "ingesting lorag's own docs/ through the gateway (parse → chunk → embed → index in Weaviate)"
$lorag ingest docs --collection lorag_docs --tenant demo

step "ingesting again: unchanged documents write nothing"
$lorag ingest docs --collection lorag_docs --tenant demo

for question in \
  "What does the indexer answer while Weaviate is down?" \
  "Which port does the gateway listen on?" \
  "Which port does the training service listen on?"; do
  step "asking: $question  (retrieve → prompt with numbered passages → generate; cited answer, per-stage timings)"
  $lorag ask "$question" --collection lorag_docs --tenant demo --top-k 3 --max-new-tokens 64 --temperature 0
done

step "fine-tuning: training a LoRA adapter on a behaviour dataset (every answer ends with a sign-off line), CPU, about 3 minutes"
$lorag train --dataset docs/examples/behaviour/train.jsonl --name lorag-demo \
  --max-steps 20 --learning-rate 2e-3 --batch-size 4 --max-length 96 --wait
version=$($lorag adapters get lorag-demo --json | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["version"])')

step "registry: moving lorag-demo@production to version $version"
$lorag adapters alias lorag-demo@production "$version"

question="What does the indexer answer while Weaviate is down?"
step "asking again with --adapter lorag-demo@production: same knowledge, trained behaviour"
$lorag ask "$question" --collection lorag_docs --tenant demo --top-k 3 --max-new-tokens 64 --temperature 0 \
  --adapter lorag-demo@production

step "health of each component"
$lorag status

printf '\nThe stack is still running: try `%s embed "your text"`, grpcurl (see README), or `make down` to stop it.\n' "$lorag"
