#!/usr/bin/env bash
# Issue 19's side-by-side table, measured in one run: one train step of one shape (default 2.7B; bf16, batch 4,
# context 1024, fused AdamW unless the recipe picks) as Hugging Face's Llama, ours and torchtitan's Llama 3 model
# each run it eagerly and compiled, then our fast recipe (and with --attention cudnn, and --optimizer overlap with
# its blocks compiled alone). The eager steps of ours and torchtitan's are traced, so `report ours torchtitan
# --pair_on backend` can say by category where they differ; so are the recipe's with and without cuDNN's attention.
#   bash scripts/gpu_side_by_side.sh OUT_DIR [SIZE]      (TRACE_DIR=DIR: the traces elsewhere than OUT_DIR/traces)
# torchtitan rows need torchtitan (0.2.2 for torch 2.11) importable; they are left out, said so, without it.
# PARTS (space-separated, default all: ours torchtitan fast hf) narrows the run to what is still missing: the whole
# takes about 10 minutes on an H200, one device call's limit.
set -euo pipefail
out=${1:?usage: scripts/gpu_side_by_side.sh OUT_DIR [SIZE]}
source "$(dirname "$0")/need_cuda.sh" && need_cuda scripts/gpu_side_by_side.sh
size=${2:-2.7B}
read -r -a parts <<< "${PARTS:-ours torchtitan fast hf}"
for part in "${parts[@]}"; do  # every part checked before any runs
    case $part in ours|torchtitan|fast|hf) ;; *) echo "gpu_side_by_side.sh: unknown part $part in PARTS (ours, torchtitan, fast, hf)" >&2; exit 2 ;; esac
done
wants() { [[ " ${parts[*]} " == *" $1 "* ]]; }
mkdir -p "$out"
backends=()
wants ours && backends+=(ours)
if ! wants torchtitan; then
    :
elif python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torchtitan') is None)"; then
    backends+=(torchtitan)
else
    echo "gpu_side_by_side.sh: torchtitan is not installed: its rows are left out" >&2
fi
traces=${TRACE_DIR:-$out/traces}
# 8 measured steps: a traced row's statistics leave out its 2 profiled steps and the next, and 5 must remain for
# the A/B report's verdict (with 6, on 2026-12-04, its eager rows kept 3 and got none).
bench=(python3 -m src.profiling.benchmark --device cuda --sizes "$size" --context_length 1024 --batch_size 4
       --mode train --warmup_steps 3 --benchmark_steps 8 --output "$out/side_by_side.jsonl")
for backend in "${backends[@]+"${backends[@]}"}"; do
    "${bench[@]}" --backend "$backend" --precision bf16 --attention sdpa --optimizer fused --trace "$traces" \
        --profile_steps 2
    "${bench[@]}" --backend "$backend" --precision bf16 --attention sdpa --optimizer fused --compile
done
if wants fast; then
    # Traced too: whether cuDNN's op keeps its kernel gain in the step is read from the two traces by category.
    # --optimizer in_backward is left out: 196.8 and 197.2 ms against the recipe's 180.8 and 183.3 on 2026-12-03.
    "${bench[@]}" --recipe fast --trace "$traces" --profile_steps 2
    "${bench[@]}" --recipe fast --attention cudnn --trace "$traces" --profile_steps 2  # cuDNN's kernel, our op
    "${bench[@]}" --recipe fast --compile_scope blocks --optimizer overlap  # blocks: a whole graph would not overlap
fi
if ! wants hf; then
    :
elif python3 -c "import transformers" 2>/dev/null; then
    "${bench[@]}" --backend hf_llama --precision bf16 --attention sdpa --optimizer fused
    "${bench[@]}" --backend hf_llama --precision bf16 --attention sdpa --optimizer fused --compile
fi
python3 -m src.profiling.table "$out/side_by_side.jsonl" --columns compact
