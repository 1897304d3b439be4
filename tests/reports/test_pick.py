"""Which strategy to pick: the fastest that fits in memory with its margin, for measured rows and for predictions."""

from src.reports.pick import Choice, describe, pick
from src.predict.scaling import predict_scaling
from src.reports.predict_report import pick_summary
from src.predict.scaling import compute_from_flops
from tests.reports.test_predict import H100, NET, SMALL


def test_the_fastest_that_fits_wins_and_the_margin_is_over_the_next_that_fits():
    choices = [Choice("ddp_overlap", 2000.0, fits=False), Choice("fsdp", 1500.0, True), Choice("zero1", 1200.0, True)]
    found = pick(choices)
    assert (found.best.name, found.runner_up.name, found.not_fitting) == ("fsdp", "zero1", ["ddp_overlap"])
    assert describe(found) == "fsdp: 1,500 tokens/s per GPU, 25% ahead of zero1 (1,200); does not fit: ddp_overlap"
    assert "within the 30%" in describe(found, noise=0.30)  # a margin a second run could undo says so
    assert describe(pick([Choice("fsdp", 1500.0, True)])) == "fsdp: 1,500 tokens/s per GPU, the only one that fits"
    assert describe(pick(choices[:1]), choices=choices[:1]) == "nothing fits in memory (ddp_overlap)"


def test_predict_names_per_world_size_the_fastest_strategy_whose_memory_fits():
    compute = compute_from_flops(SMALL, H100, 0.4)
    flat = [p for s in ("ddp_flat", "zero1", "fsdp") for p in predict_scaling(SMALL, s, [1, 8], NET, compute, 80e9)]
    summary = pick_summary(flat)
    at_8 = [p for p in flat if p.world_size == 8 and p.fits]
    best = max(at_8, key=lambda p: p.tokens_per_s_per_gpu)
    assert f"- 8 GPUs: {best.strategy}: {best.tokens_per_s_per_gpu:,.0f} tokens/s per GPU" in summary
    # memory decides first: with room for no strategy but one, that one is picked whatever its speed
    tight = [p for s in ("ddp_flat", "fsdp") for p in predict_scaling(SMALL, s, [8], NET, compute, 80e9)]
    limit = min(p.memory_total_bytes for p in tight) + 1
    tight = [p for s in ("ddp_flat", "fsdp") for p in predict_scaling(SMALL, s, [8], NET, compute, limit)]
    fits = [p.strategy for p in tight if p.fits]
    assert len(fits) == 1 and f"- 8 GPUs: {fits[0]}:" in pick_summary(tight) and "the only one that fits" in \
        pick_summary(tight)
