#!/usr/bin/env bash
# Issue 19's "where fp8 pays" table on one GPU: the fast recipe in bf16 against each torchao float8 recipe, every
# model with its blocks compiled alone (--compile_scope blocks: compile time is one block's, so the sweep fits),
# train, batch 4, context 1024. The fp8 rows run in the recipe's compile mode for fp8, reduce-overhead (each compiled
# graph replayed as a CUDA graph: below 2.7B fp8 was host-bound without it); COMPILE_MODES="default reduce-overhead"
# runs every row in each mode given (bf16 in reduce-overhead then leaves the recipe's whole-step graphs).
#   bash scripts/gpu_fp8_table.sh OUT_DIR sizes|layers|torchtitan|scope ...
#   sizes:      small medium large xl 2.7B whole, traced (2 profiled steps: the categories say where time went)
#   layers:     the 10B and Llama 3.1 8B shapes at 2 and 4 layers (whole, they do not fit with AdamW's state in
#               141 GB): the per-layer figures are the difference, over 2 layers
#   torchtitan: torchtitan's Llama 3 model at 2.7B, per-block compile, bf16 and float8 tensorwise / rowwise
#   scope:      the 2.7B fast recipe compiled whole (the default scope) beside the blocks rows
# SIZES, DEPTHS and RECIPES (space-separated) narrow sizes/layers to what is still missing: each row is its own
# process, ~35 s on an H200 (import, a block's compile, 11 steps), so the whole table does not fit one 10-minute
# call. E.g. SIZES="medium small" RECIPES="tensorwise" ... sizes; DEPTHS=4 ... layers.
# Then: python3 scripts/fp8_table.py OUT_DIR/fp8_table.jsonl
set -euo pipefail
out=${1:?usage: scripts/gpu_fp8_table.sh OUT_DIR sizes|layers|torchtitan|scope ...}
shift
for part in "$@"; do  # every part checked before any runs
    case $part in sizes|layers|torchtitan|scope) ;; *) echo "gpu_fp8_table.sh: unknown part $part (sizes, layers, torchtitan, scope)" >&2; exit 2 ;; esac
done
source "$(dirname "$0")/need_cuda.sh" && need_cuda scripts/gpu_fp8_table.sh
mkdir -p "$out"
bench=(python3 -m src.profiling.benchmark --device cuda --context_length 1024 --batch_size 4 --mode train
       --warmup_steps 3 --benchmark_steps 8 --output "$out/fp8_table.jsonl")
read -r -a recipes <<< "${RECIPES:-tensorwise rowwise rowwise_with_gw_hp}"
read -r -a sizes <<< "${SIZES:-small medium large xl 2.7B}"
read -r -a depths <<< "${DEPTHS:-2 4}"
fast=(--recipe fast --precision bf16 fp8 --fp8_recipe "${recipes[@]}")
[ -n "${COMPILE_MODES:-}" ] && { read -r -a modes <<< "$COMPILE_MODES"; fast+=(--compile_mode "${modes[@]}"); }
for part in "$@"; do
    case $part in
        sizes) "${bench[@]}" "${fast[@]}" --compile_scope blocks --sizes "${sizes[@]}" \
                   --trace "${TRACE_DIR:-/tmp/fp8_traces}" --profile_steps 2 ;;
        layers) for n in "${depths[@]}"; do
                    "${bench[@]}" "${fast[@]}" --compile_scope blocks --model 10B llama-3.1-8b --num_layers "$n"
                done ;;
        torchtitan) "${bench[@]}" --backend torchtitan --compile --compile_scope blocks --attention sdpa \
                        --optimizer fused --precision bf16 fp8 --fp8_recipe tensorwise rowwise --sizes 2.7B ;;
        scope) "${bench[@]}" --recipe fast --sizes 2.7B ;;
    esac
done
