#!/usr/bin/env bash
# The numerics check behind docs/results/numerics_*: 100 train steps of the small preset on a learnable token
# stream: the plain bf16 step against itself (run-to-run noise) and against the fast recipe, at the default
# learning rate with warm-up (OUT_DIR/default) and at lr 1e-3 without warm-up, where training is chaotic (OUT_DIR/lr1e-3).
#   bash scripts/gpu_numerics.sh OUT_DIR
set -euo pipefail
out=${1:?usage: scripts/gpu_numerics.sh OUT_DIR}
mkdir -p "$out/default" "$out/lr1e-3"
python3 -m src.profiling.numerics --size small --steps 100 --out "$out/default" \
    --variants plain plain_repeat fused_adamw compiled fast | tee "$out/default/numerics.md" || true
python3 -m src.profiling.numerics --size small --steps 100 --lr 1e-3 --warmup 0 --out "$out/lr1e-3" \
    --variants plain plain_repeat fast | tee "$out/lr1e-3/numerics.md" || true
