#!/usr/bin/env bash
# Peak memory of the 2.7B preset behind docs/results/memory_2p7b_*: contexts 128, 256, 512, forward-only and a
# full train step, fp32 and bf16, each with an allocator snapshot (PATH-<config>.pickle) and its timeline PNG.
#   bash scripts/gpu_memory.sh OUT_DIR
set -euo pipefail
out=${1:?usage: scripts/gpu_memory.sh OUT_DIR}
source "$(dirname "$0")/need_cuda.sh" && need_cuda scripts/gpu_memory.sh
mkdir -p "$out"
for precision in fp32 bf16; do
    for mode in forward train; do
        python3 -m src.profiling.benchmark --sizes 2.7B --context_length 128 256 512 --mode "$mode" \
            --precision "$precision" --warmup_steps 1 --benchmark_steps 2 \
            --memory_snapshot "$out/memory" --output "$out/memory_2p7b.jsonl"
    done
done
python3 -m src.profiling.table "$out/memory_2p7b.jsonl"
