#!/usr/bin/env bash
# The H200 attention run behind docs/results/attention_h200_2026-12-01.md and attention_h200_2026-12-03.md, in one
# call on the GPU machine: tune the Hopper tile table, pointer loads and TMA (and WRITE the winners into
# src/kernels/flash_triton.py of this checkout), run the kernels' tests (tests/kernels) on the GPU with that table,
# then the comparison with SDPA as torch picks it, SDPA held to FlashAttention-2 and cuDNN's kernel (our op), batch
# 8 x 16 heads and at the 2.7B model's attention (batch 4 x 32 heads of 80, T 1024), and the standard case.
#   bash scripts/attention_h200.sh OUT_DIR
set -uo pipefail
out=${1:?usage: scripts/attention_h200.sh OUT_DIR}
source "$(dirname "$0")/need_cuda.sh" && need_cuda scripts/attention_h200.sh
mkdir -p "$out" /tmp/attention_tune
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  date -u -Iseconds; echo "commit ${LMBENCH_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null)}"; } > "$out/env.txt" 2>&1
timeout 150 python3 scripts/attention_h200.py --out /tmp/attention_tune --phase compile --workers 14
timeout 180 python3 scripts/attention_h200.py --out /tmp/attention_tune --phase time \
    --write_table src/kernels/flash_triton.py > "$out/tune.txt" 2>&1
cp /tmp/attention_tune/tune.json src/kernels/flash_triton.py "$out/"
timeout 180 python3 -m pytest tests/kernels -q -n 14 -p no:cacheprovider > /tmp/attention_pytest.txt 2>&1
echo "pytest exit $?" >> /tmp/attention_pytest.txt
grep -E "passed|failed|error|exit" /tmp/attention_pytest.txt | tail -20 > "$out/pytest.txt"
{ python3 -m src.profiling.attention --implementations sdpa sdpa_flash cudnn flash --seq_lens 4096 16384 --head_dims 64 128 \
      --dtypes bf16 --causal true --batch_size 8 --num_heads 16 --output "$out/attention_h200.jsonl"
  python3 -m src.profiling.attention --implementations sdpa sdpa_flash cudnn flash --seq_lens 1024 --head_dims 80 \
      --dtypes bf16 --causal true --batch_size 4 --num_heads 32 --output "$out/attention_h200.jsonl"  # 2.7B's
  python3 -m src.profiling.attention --standard_case --output "$out/standard_case.jsonl"; } > "$out/attention.txt" 2>&1
rm -f "$out"/.*.lock  # the results writer's lock files: only 8 files come back from the GPU machine
cat "$out/env.txt" "$out/pytest.txt"
grep -E "^best|^\| (groups|all heads|one head)|^### " "$out/tune.txt"
grep -v "^\[" "$out/attention.txt"
