#!/usr/bin/env bash
# Nsight Systems profiles behind docs/results/nsys_*: one configuration (large preset, context 512, fp32, naive
# attention), forward-only and a full train step, captured over the measured steps only (cudaProfilerApi range),
# then the NVTX and kernel summaries. Also checks that the README's plain command profiles the child processes.
#   bash scripts/nsys_profiles.sh OUT_DIR
set -euo pipefail
out=${1:?usage: scripts/nsys_profiles.sh OUT_DIR}
source "$(dirname "$0")/need_cuda.sh" && need_cuda scripts/nsys_profiles.sh nsys
mkdir -p "$out"
nsys_flags=(-t cuda,nvtx --sample=none --cpuctxsw=none --force-overwrite true)
bench=(python3 -m src.profiling.benchmark --sizes large --context_length 512 --warmup_steps 3 --benchmark_steps 5)
for mode in forward train; do
    nsys profile "${nsys_flags[@]}" --capture-range=cudaProfilerApi --capture-range-end=stop -o "$out/$mode" \
        "${bench[@]}" --mode "$mode" --isolate none --output "$out/nsys_runs.jsonl" > "$out/$mode.table.md"
    nsys stats --report nvtx_sum,cuda_gpu_kern_sum "$out/$mode.nsys-rep" > "$out/$mode.stats.txt" 2>&1
done
# The plain command of the README (children included: one process per configuration).
nsys profile "${nsys_flags[@]}" -o "$out/plain" python3 -m src.profiling.benchmark --sizes small --benchmark_steps 3 > /dev/null
nsys stats --report nvtx_sum "$out/plain.nsys-rep" > "$out/plain.stats.txt" 2>&1
