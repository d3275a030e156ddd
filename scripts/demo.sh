#!/usr/bin/env bash
# `make demo`: the main job on embedded defaults. Starts the local stack (Weaviate and every implemented
# service, in the background), calls it the way an application would, and leaves it running for you.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
lorag=.venv/bin/lorag
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "starting the local stack (first start loads the models: about 20 s)"
$lorag up

step "embedding through the embedding endpoint (lorag embed → EmbeddingService/Embed)"
$lorag embed \
  "lorag adapts an LLM to an organisation: RAG for what it must know, LoRA for how it must behave." \
  "Weaviate stores the chunk vectors and answers hybrid BM25 + vector queries." \
  "What does lorag use Weaviate for?" --query

step "health of each component"
$lorag status

printf '\nThe stack is still running: try `%s embed "your text"`, grpcurl (see README), or `make down` to stop it.\n' "$lorag"
