#!/usr/bin/env bash
# The numerics check behind docs/results/numerics_*: 100 train steps of the small preset on a learnable token
# stream: the plain bf16 step against itself (run-to-run noise), a bf16-sized perturbation of it, compiled with
# and without cuDNN's attention, and the fast recipe (first gradients against fp32 arithmetic too), at the
# default learning rate with warm-up (OUT_DIR/default); CHAOTIC=1 adds lr 1e-3 without warm-up (OUT_DIR/lr1e-3);
# FP8=1 adds the fast recipe against its torchao float8 versions, every recipe, the plain bf16 step as reference
# (OUT_DIR/fp8; needs torchao and an fp8 GPU).
#   bash scripts/gpu_numerics.sh OUT_DIR
set -euo pipefail
out=${1:?usage: scripts/gpu_numerics.sh OUT_DIR}
source "$(dirname "$0")/need_cuda.sh" && need_cuda scripts/gpu_numerics.sh
mkdir -p "$out/default"
status=0  # every section runs; the script fails if any did (a variant outside the tolerance exits 1)
python3 -m src.profiling.numerics --size small --steps 100 --out "$out/default" --gradients \
    --variants plain plain_repeat plain_rounded_init compiled_cudnn_sdpa compiled fast fast_bf16_weights | tee "$out/default/numerics.md" || status=1
if [ "${CHAOTIC:-0}" = 1 ]; then  # lr 1e-3 without warm-up: even the plain step differs from itself by 25-50%
    mkdir -p "$out/lr1e-3"
    python3 -m src.profiling.numerics --size small --steps 100 --lr 1e-3 --warmup 0 --out "$out/lr1e-3" \
        --variants plain plain_repeat fast | tee "$out/lr1e-3/numerics.md" || true  # outside 2% by design
fi
if [ "${FP8:-0}" = 1 ]; then
    mkdir -p "$out/fp8"
    python3 -m src.profiling.numerics --size small --steps 100 --out "$out/fp8" --gradients \
        --variants plain plain_repeat fast fast_fp8_tensorwise fast_fp8_rowwise fast_fp8_rowwise_with_gw_hp \
        | tee "$out/fp8/numerics.md" || status=1
fi
exit $status
