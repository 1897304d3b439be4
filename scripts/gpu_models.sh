#!/usr/bin/env bash
# Issue 18's GPU rows: Hugging Face models from their shipped config.json (configs/) through the model interface,
# eager bf16 SDPA and the fast recipe, train steps at batch 4 x context 1024, each configuration in its own process.
#   bash scripts/gpu_models.sh OUT_DIR [MODELS...]    (default: qwen2.5-0.5b llama-3.2-1b llama-3.2-3b)
set -euo pipefail
out=${1:?usage: scripts/gpu_models.sh OUT_DIR [MODELS...]}
source "$(dirname "$0")/need_cuda.sh" && need_cuda scripts/gpu_models.sh
shift
models=("${@:-qwen2.5-0.5b llama-3.2-1b llama-3.2-3b}")
mkdir -p "$out"
bench=(python3 -m src.profiling.benchmark --model ${models[@]} --context_length 1024 --batch_size 4 --mode train
       --output "$out/models.jsonl")
"${bench[@]}" --precision bf16 --attention sdpa --optimizer fused
"${bench[@]}" --recipe fast
python3 -m src.profiling.table "$out/models.jsonl"
