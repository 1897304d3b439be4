"""The split probe: the shapes a TP degree gives one rank, the command's rows at tiny shapes on CPU, their reader."""

import json
import os

import pytest
import torch

from src.harness.record import row_problem
from src.harness.results import read_records
from src.model.catalog import resolve_model
from src.predict.scaling import Workload
from src.predict.split import (SHAPE, SUMMARY, AttentionShape, Gemm, SplitProbe, attention_shape, block_gemms,
                               distinct, efficiencies, head_gemms, linear_gemms, read_body)
from src.profiling.split_probe import main
from src.reports.predict_rows import split_probe

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "model", "configs")
TINY = resolve_model("tiny")  # d_model 64, d_ff 256, 4 heads of 16, vocab 10000
GQA = resolve_model(os.path.join(CONFIGS, "llama-gqa-tiny.json"))  # d_model 64, d_ff 160, 4 heads, 2 KV, vocab 512


def test_one_linear_is_three_gemms_in_the_layouts_autograd_uses():
    # y = x W^T, x (8, 64), W (256, 64): forward (8,64)x(64,256); dx = dy W (8,256)x(256,64); dW = dy^T x (256,8)x(8,64)
    assert linear_gemms("gate", 8, 64, 256) == [Gemm("gate", "forward", 8, 64, 256),
                                                 Gemm("gate", "grad_input", 8, 256, 64),
                                                 Gemm("gate", "grad_weight", 256, 8, 64)]


# (in, out) of each linear on one rank, written out by hand: q/k/v and gate/up split their outputs, o and down
# their inputs; KV heads fewer than the degree are replicated (GQA at tp 4: 2 KV heads -> 1 per rank, width 16).
BY_HAND = {
    (TINY, 1): [("q", 64, 64), ("k", 64, 64), ("v", 64, 64), ("o", 64, 64), ("gate", 64, 256), ("up", 64, 256),
                ("down", 256, 64)],
    (TINY, 2): [("q", 64, 32), ("k", 64, 32), ("v", 64, 32), ("o", 32, 64), ("gate", 64, 128), ("up", 64, 128),
                ("down", 128, 64)],
    (TINY, 4): [("q", 64, 16), ("k", 64, 16), ("v", 64, 16), ("o", 16, 64), ("gate", 64, 64), ("up", 64, 64),
                ("down", 64, 64)],
    (GQA, 1): [("q", 64, 64), ("k", 64, 32), ("v", 64, 32), ("o", 64, 64), ("gate", 64, 160), ("up", 64, 160),
               ("down", 160, 64)],
    (GQA, 2): [("q", 64, 32), ("k", 64, 16), ("v", 64, 16), ("o", 32, 64), ("gate", 64, 80), ("up", 64, 80),
               ("down", 80, 64)],
    (GQA, 4): [("q", 64, 16), ("k", 64, 16), ("v", 64, 16), ("o", 16, 64), ("gate", 64, 40), ("up", 64, 40),
               ("down", 40, 64)],
}
HEADS_BY_HAND = {(TINY, 1): (4, 4, 10000), (TINY, 2): (2, 2, 5000), (TINY, 4): (1, 1, 2500),
                 (GQA, 1): (4, 2, 512), (GQA, 2): (2, 1, 256), (GQA, 4): (1, 1, 128)}


@pytest.mark.parametrize("model, tp", list(BY_HAND), ids=[f"{m.name}-tp{t}" for m, t in BY_HAND])
def test_the_shapes_of_a_degree_are_the_hand_written_ones(model, tp):
    tokens = 2 * 16
    expected = [g for name, i, o in BY_HAND[(model, tp)] for g in linear_gemms(name, tokens, i, o)]
    assert block_gemms(model.architecture, tokens, tp) == expected
    heads, kv_heads, vocab = HEADS_BY_HAND[(model, tp)]
    assert head_gemms(model.architecture, tokens, tp) == linear_gemms("head", tokens, 64, vocab)
    assert attention_shape(model.architecture, 2, 16, tp) == AttentionShape(2, heads, kv_heads, 16, 16)


def test_each_distinct_gemm_is_timed_once_for_every_linear_of_its_shape():
    groups = distinct(block_gemms(TINY.architecture, 8, 1))
    assert [(g.op, g.m, g.k, g.n, names) for g, names in groups] == [
        ("forward", 8, 64, 64, ["q", "k", "v", "o"]), ("grad_input", 8, 64, 64, ["q", "k", "v", "o"]),
        ("grad_weight", 64, 8, 64, ["q", "k", "v", "o"]),
        ("forward", 8, 64, 256, ["gate", "up"]), ("grad_input", 8, 256, 64, ["gate", "up"]),
        ("grad_weight", 256, 8, 64, ["gate", "up"]),
        ("forward", 8, 256, 64, ["down"]), ("grad_input", 8, 64, 256, ["down"]), ("grad_weight", 64, 8, 256, ["down"]),
    ]


def test_a_degree_that_does_not_divide_or_a_mixture_of_experts_is_refused():
    with pytest.raises(ValueError, match="must divide num_heads"):
        block_gemms(TINY.architecture, 8, 3)
    moe = TINY.architecture.with_(num_experts=4, experts_per_token=2, expert_d_ff=64)
    with pytest.raises(ValueError, match="dense blocks"):
        block_gemms(moe, 8, 2)


def test_efficiency_is_the_constant_rate_time_over_the_measured_one():
    assert efficiencies({1: 8.0, 2: 8.0, 4: 4.0}) == {1: 1.0, 2: 0.5, 4: 0.5}
    with pytest.raises(ValueError, match="tp 1"):
        efficiencies({2: 1.0})


def test_a_degree_between_probed_ones_is_interpolated_and_one_beyond_is_refused():
    probe = SplitProbe({1: 1.0, 2: 0.8, 8: 0.5}, source="p.jsonl")
    assert probe.efficiency_at(2) == (0.8, "tp 2 measured")
    value, how = probe.efficiency_at(4)  # log2 4 is a third of the way from log2 2 to log2 8
    assert value == pytest.approx(0.8 - (0.8 - 0.5) / 2) and "interpolated between tp 2 and 8" in how
    assert probe.efficiency_at(1)[0] == 1.0
    with pytest.raises(ValueError, match=r"tp 16 is outside the split probe's degrees \(1, 2, 8\) in p.jsonl"):
        probe.efficiency_at(16)


def run_probe(path, *extra) -> int:
    return main(["--model", "tiny", "--tp", "2", "4", "--batch_size", "1", "--context_length", "16",
                 "--device", "cpu", "--warmup_ms", "1", "--rep_ms", "1", "--output", str(path), *extra])


def test_the_command_writes_rows_its_reader_reads(tmp_path, capsys):
    out = tmp_path / "probe.jsonl"
    assert run_probe(out) == 0
    assert "| tp | block ms" in capsys.readouterr().out
    records, warnings = read_records(str(out))
    assert not warnings and all(row_problem(r) == "" for r in records)
    assert len(records) == len(out.read_text().splitlines())  # every line a row the results reader keeps
    shapes = [read_body(r) for r in records if r["kind"] == SHAPE]
    summaries = {s.tp: s for s in (read_body(r) for r in records if r["kind"] == SUMMARY)}
    assert sorted(summaries) == [1, 2, 4]  # 1 added: the reference
    for t, s in summaries.items():
        block = sum(x.median_ms * x.count for x in shapes if x.tp == t and x.part == "block")
        head = sum(x.median_ms * x.count for x in shapes if x.tp == t and x.part == "head")
        assert s.block_ms == pytest.approx(block) and s.head_ms == pytest.approx(head)
        assert s.model_ms == pytest.approx(TINY.architecture.num_layers * block + head)
        assert s.efficiency == pytest.approx(summaries[1].model_ms / t / s.model_ms)
    # per degree: 21 GEMMs of a block (7 linears x 3) and 3 of the head counted once each, attention twice
    for t in (1, 2, 4):
        counted = [x for x in shapes if x.tp == t]
        assert sum(x.count for x in counted if x.names != ["attention"]) == 24
        assert sorted(x.op for x in counted if x.names == ["attention"]) == ["backward", "forward"]
    probe = split_probe(records, Workload(TINY, "tiny", 1, 16), "probe.jsonl")
    assert probe.efficiency == {t: s.efficiency for t, s in summaries.items()}
    assert probe.slowdown is None and probe.source == "probe.jsonl"


def test_the_reader_picks_the_workload_shape_and_says_when_its_batch_differs(tmp_path, capsys):
    out = tmp_path / "probe.jsonl"
    assert run_probe(out) == 0
    records, _ = read_records(str(out))
    other = split_probe(records, Workload(TINY, "tiny", 4, 16), "probe.jsonl")
    assert other.source == "probe.jsonl at batch 1 x context 16" and other.efficiency
    assert split_probe(records, Workload(GQA, "gqa", 1, 16), "probe.jsonl") is None  # another shape, no overlap rows
    assert split_probe(records, Workload(TINY, "tiny", 1, 16, "fp32"), "probe.jsonl") is None  # probed in bf16


@pytest.mark.parametrize("extra, message", [
    (["--tp", "3"], "--tp 3"),
    (["--overlap"], "--overlap"),
    (["--model", "no-such-model"], "--model"),
    (["--output", "probe.csv"], ".jsonl"),
    (["--batch_size", "0"], "--batch_size"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, extra, message):
    out = tmp_path / "probe.jsonl"
    argv = ["--model", "tiny", "--tp", "2", "--device", "cpu", "--output", str(out)]
    assert main(argv + [e if e != "probe.csv" else str(tmp_path / e) for e in extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is of a machine without CUDA")
def test_device_cuda_without_cuda_is_refused(capsys):
    assert main(["--model", "tiny", "--device", "cuda"]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_an_existing_output_that_is_not_ours_is_refused(tmp_path, capsys):
    out = tmp_path / "notes.jsonl"
    out.write_text(json.dumps([1, 2]) + "\n")
    assert run_probe(out) == 2
    assert "not a JSON-lines results file" in capsys.readouterr().err
