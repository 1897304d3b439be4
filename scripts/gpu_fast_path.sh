#!/usr/bin/env bash
# The side-by-side train-step table behind docs/results/fast_path_*: bf16, batch 4, context 1024, AdamW, measured
# in one run: eager naive, eager SDPA, torch.compile, the fast recipe, and Hugging Face's Llama of the same shape.
#   bash scripts/gpu_fast_path.sh OUT_DIR [SIZES...]      (default sizes: small 2.7B)
set -euo pipefail
out=${1:?usage: scripts/gpu_fast_path.sh OUT_DIR [SIZES...]}
source "$(dirname "$0")/need_cuda.sh" && need_cuda scripts/gpu_fast_path.sh
shift
sizes=("${@:-small 2.7B}")
mkdir -p "$out"
bench=(python3 -m src.profiling.benchmark --sizes ${sizes[@]} --context_length 1024 --batch_size 4 --mode train
       --output "$out/fast_path.jsonl")
"${bench[@]}" --precision bf16 --attention naive sdpa
"${bench[@]}" --precision bf16 --attention sdpa --compile
"${bench[@]}" --recipe fast
if python3 -c "import transformers" 2>/dev/null; then
    "${bench[@]}" --precision bf16 --backend hf_llama
fi
python3 -m src.profiling.table "$out/fast_path.jsonl"
