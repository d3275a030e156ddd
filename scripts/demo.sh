#!/usr/bin/env bash
# `make demo`: the main job on embedded defaults. Starts the local stack (Weaviate and every implemented
# service, in the background), embeds, ingests lorag's own docs and retrieves from them the way an application
# would, and leaves the stack running for you.
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

for question in "How does the indexer map errors when Weaviate is down?" "Which reranker is the offline default and why?"; do
  step "retrieving: $question"
  $lorag retrieve "$question" --collection lorag_docs --tenant demo --top-k 3
done

step "health of each component"
$lorag status

printf '\nThe stack is still running: try `%s embed "your text"`, grpcurl (see README), or `make down` to stop it.\n' "$lorag"
