#!/usr/bin/env bash
# The numerics check behind docs/results/numerics_*: 100 train steps of the small preset on a learnable token
# stream, the plain bf16 step against itself (run-to-run noise), each change of the fast recipe alone, and the recipe.
#   bash scripts/gpu_numerics.sh OUT_DIR
set -euo pipefail
out=${1:?usage: scripts/gpu_numerics.sh OUT_DIR}
python3 -m src.profiling.numerics --size small --steps 100 --out "$out" \
    --variants plain plain_repeat fused_adamw compiled compiled_cuda_graphs fast | tee "$out/numerics.md"
