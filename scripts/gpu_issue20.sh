#!/usr/bin/env bash
# Issue 20 on one GPU: every strategy at world size 1 over NCCL, eager and (where it runs) compiled; the split-shape
# probe of 2.7B and a Llama 3.1 8B shape at TP 2/4/8 with the overlap slowdown; the predictor's TP rows from it.
#   bash scripts/gpu_issue20.sh OUT_DIR
# tp and fsdp_tp need 2 ranks or more, and NCCL takes one GPU per rank: on one GPU they are not run here.
set -euo pipefail
out=${1:?usage: scripts/gpu_issue20.sh OUT_DIR}
source "$(dirname "$0")/need_cuda.sh" && need_cuda scripts/gpu_issue20.sh
mkdir -p "$out"
bench=(python3 -m src.profiling.benchmark --device cuda --sizes small --context_length 512 --batch_size 4
       --mode train --precision bf16 --attention sdpa --warmup_steps 3 --benchmark_steps 6 --nproc_per_node 1
       --output "$out/strategies.jsonl")
"${bench[@]}" --parallel ddp_naive ddp_flat ddp_overlap ddp_bucketed zero1 fsdp torch_ddp torch_zero1 fsdp2
"${bench[@]}" --parallel ddp_overlap zero1 torch_ddp fsdp2 --compile
python3 -m src.profiling.split_probe --model 2.7B --tp 1 2 4 8 --batch_size 4 --context_length 1024 --overlap \
    --output "$out/split_probe.jsonl"
python3 -m src.profiling.split_probe --model llama-3.1-8b --tp 1 2 4 8 --batch_size 1 --context_length 8192 \
    --output "$out/split_probe.jsonl"
python3 -m src.profiling.predict --sizes 2.7B --parallel tp fsdp_tp fsdp2 --gpu H200 \
    --probe "$out/split_probe.jsonl" --plot "$out/predict_probe_2p7b.png"
python3 -m src.profiling.predict --model llama-3.1-8b --batch_size 1 --context_length 8192 --parallel tp fsdp_tp fsdp2 \
    --gpu H200 --probe "$out/split_probe.jsonl"
python3 -m src.profiling.table "$out/strategies.jsonl" --columns compact
