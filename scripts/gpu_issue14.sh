#!/usr/bin/env bash
# Issue 14 on one H200, in one run of at most BUDGET_S (default 530 s): each part has its own time limit, cut to
# what is left of the budget (a part with under 20 s left is skipped), and prints its time. Parts run most
# wanted first (a, c-fast, d-fast, b-train, c-plain, b-forward, d-fast-traced, d-compiled, e); what they are:
#   (a) activation checkpointing: 2.7B, batch 4, ctx 2048, train, bf16, SDPA (naive attention's T x T scores would
#       not fit at 2048), torch's default AdamW; N in 1 2 4 8 16 32 and none; warm-up 2, measured 3
#   (c) the issue's table: 2.7B and small, bf16, batch 4, ctx 1024, train, --recipe fast; and plain train
#       (eager bf16 SDPA) with --optimizer default against fused
#   (b) the 2026 presets in train mode at their own defaults (bf16, SDPA; OOM rows expected, with the estimate),
#       and 8B-leaderboard forward-only at 32768 (its default), 16384 and 8192 to find a context that fits
#   (d) the anomaly: medium, large, xl with --recipe fast (train; large traced, 2 steps) and large, xl compiled
#       bf16 SDPA in forward_backward and train
#   (e) the compiled-cuDNN-attention gradient reproduction (scripts/cudnn_compiled_grad_repro.py)
#   (f) the issue's attention rows: flash against SDPA (batch 8 x 16 heads, causal bf16, T 4096 and 16384, d 64
#       and 128) and the standard case; the attention command's tables go to OUT/attention.txt
#   (g) where the table's fast steps spend their time: 2.7B and small with --recipe fast traced (2 profiled
#       steps); each row's category table is copied to OUT/gap_<size>.md and the trace itself deleted (too large)
# then a short table of every row (scripts/issue14_summary.py), also written to OUT/summary.md.
#   bash scripts/gpu_issue14.sh OUT_DIR [PART ...]     (parts: a-g, default all; e.g. `c f g` then `b d e` in
#                                                      two runs if one does not fit; the summary reads every file)
# Exits 1 if any part failed or ran out of time (its finished rows stay in its file); OOM rows are results.
set -uo pipefail
out=${1:?usage: scripts/gpu_issue14.sh OUT_DIR [PART ...]}
source "$(dirname "$0")/need_cuda.sh" && need_cuda scripts/gpu_issue14.sh
shift
selected=" ${*:-a b c d e f g} "
mkdir -p "$out"
budget=${BUDGET_S:-530}
bench=(python3 -m src.profiling.benchmark)
failed=()
start=$SECONDS

part() {  # part NAME LIMIT_S COMMAND...: SIGINT at the limit, which the benchmark turns into a clean stop
    local name=$1 limit=$2 t0=$SECONDS left=$((budget - SECONDS + start))
    shift 2
    [[ "$selected" == *" ${name:0:1} "* ]] || return 0
    if [ "$left" -lt 20 ]; then
        failed+=("$name (skipped: budget spent)")
        echo "=== part $name skipped: ${left} s of the budget left" >&2
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "=== part $name (limit ${limit} s)" >&2
    timeout -s INT -k 15 "$limit" "$@" >/dev/null || failed+=("$name (exit $?)")  # rows: in the files
    echo "=== part $name: $((SECONDS - t0)) s (total $((SECONDS - start)) s)" >&2
}

part a 140 "${bench[@]}" --sizes 2.7B --batch_size 4 --context_length 2048 --mode train --precision bf16 \
    --attention sdpa --warmup_steps 2 --benchmark_steps 3 --optimizer default \
    --activation_checkpointing blocks:1 blocks:2 blocks:4 blocks:8 blocks:16 blocks:32 none \
    --output "$out/checkpointing.jsonl"

table=(--batch_size 4 --context_length 1024 --mode train --output "$out/issue_table.jsonl")
part c-fast 240 "${bench[@]}" --sizes 2.7B small --recipe fast "${table[@]}"
part f 150 bash -c '{ python3 -m src.profiling.attention --implementations sdpa flash --seq_lens 4096 16384 \
    --head_dims 64 128 --dtypes bf16 --causal true --batch_size 8 --num_heads 16 --output "$1/attention.jsonl" \
    && python3 -m src.profiling.attention --standard_case --output "$1/standard_case.jsonl"; } > "$1/attention.txt" 2>&1' \
    _ "$out"
part g 170 "${bench[@]}" --sizes 2.7B small --recipe fast --trace "$out/trace_gap" --profile_steps 2 \
    --batch_size 4 --context_length 1024 --mode train --output "$out/gap.jsonl"
for table_md in "$out"/trace_gap/*.md; do  # the category tables stay; the traces (hundreds of MB) do not
    [ -e "$table_md" ] && cp "$table_md" "$out/gap_$(basename "$table_md")"
done
rm -rf "$out/trace_gap"
anomaly=(--batch_size 4 --context_length 1024 --output "$out/anomaly.jsonl")
part d-fast 130 "${bench[@]}" --sizes medium large xl --recipe fast --mode train "${anomaly[@]}"

part b-train 50 "${bench[@]}" --sizes 10B 8B-leaderboard --mode train --precision bf16 --attention sdpa \
    --warmup_steps 1 --benchmark_steps 2 --output "$out/presets.jsonl"
part c-plain 70 "${bench[@]}" --sizes 2.7B small --precision bf16 --attention sdpa --optimizer default fused \
    "${table[@]}"
part b-forward 60 "${bench[@]}" --sizes 8B-leaderboard --mode forward --precision bf16 --attention sdpa \
    --context_length 32768 16384 8192 --warmup_steps 1 --benchmark_steps 2 --output "$out/presets.jsonl"

part d-fast-traced 50 "${bench[@]}" --sizes large --recipe fast --mode train --trace "$out/trace_large" \
    --profile_steps 2 "${anomaly[@]}"
part d-compiled 110 "${bench[@]}" --sizes large xl --compile --precision bf16 --attention sdpa \
    --mode forward_backward train "${anomaly[@]}"

part e 90 bash -c 'python3 scripts/cudnn_compiled_grad_repro.py > "$1" 2>&1' _ "$out/cudnn_repro.txt"

{
    python3 scripts/issue14_summary.py "$out/checkpointing.jsonl" "$out/presets.jsonl" "$out/issue_table.jsonl" \
        "$out/anomaly.jsonl" "$out/gap.jsonl"
    [ -s "$out/attention.txt" ] && { echo; grep -vE "^\[|^$" "$out/attention.txt"; }
    echo
    echo "cuDNN reproduction: $(grep -E '^(REPRODUCED|NOT REPRODUCED)' "$out/cudnn_repro.txt" 2>/dev/null | tail -1 \
        || echo 'no verdict')"
    echo "total $((SECONDS - start)) s; failed parts: ${failed[*]:-none}"
} | tee "$out/summary.md"
[ ${#failed[@]} -eq 0 ]
