import pytest

from src import nvtx
from src.harness.runner import run_spec
from tests import specs


@pytest.fixture
def captured(monkeypatch):
    """Record NVTX pushes and pops as a tree of names (CPU: no profiler needed)."""
    events = []
    monkeypatch.setattr(nvtx, "_push", lambda name: events.append(("push", name)))
    monkeypatch.setattr(nvtx, "_pop", lambda: events.append(("pop", None)))
    yield events
    nvtx.configure(harness=False, model=False)


def paths(events):
    """Every range as its full path from the root, e.g. ('config ...', 'measure', 'measure step 0', 'forward')."""
    stack, seen = [], []
    for kind, name in events:
        if kind == "push":
            stack.append(name)
            seen.append(tuple(stack))
        else:
            stack.pop()
    assert stack == []  # balanced: every push has its pop
    return seen


def tiny_spec(**kw):
    return specs.tiny_spec(**{**dict(d_model=32, d_ff=64, num_heads=2, vocab_size=100, context_length=8,
                                      batch_size=2), **kw})


def test_ranges_nest_config_measure_step_phase_layer_and_attention_parts(captured):
    nvtx.configure(harness=True, model=True)
    assert run_spec(tiny_spec())["status"] == "ok"
    seen = paths(captured)
    config = seen[0][0]
    assert config.startswith("config tiny")
    step = (config, "measure", "measure step 1")
    forward = step + ("forward",)
    attention = forward + ("layer 1", "attention")
    for expected in [
        (config, "warmup", "warmup step 0", "forward"),
        step + ("backward",), step + ("optimizer",), forward + ("loss",),
        forward + ("layer 0",), forward + ("layer 1", "feed-forward"), forward + ("lm head",),
        attention + ("qkv projection",), attention + ("rope",), attention + ("attention scores",),
        attention + ("softmax",), attention + ("weighted sum",), attention + ("output projection",),
    ]:
        assert expected in seen, expected
    assert all(p[:2] != (config, "measure") or len(p) < 3 or p[2].startswith("measure step") for p in seen)


def test_model_ranges_can_be_off_while_harness_ranges_stay(captured):
    nvtx.configure(harness=True, model=False)  # what --compile does: the compiled model has no ranges inside
    run_spec(tiny_spec())
    names = {name for _, name in captured}
    assert "forward" in names and "layer 0" not in names and "softmax" not in names


def test_off_means_no_calls_at_all(captured):
    nvtx.configure(harness=False, model=False)
    run_spec(tiny_spec())
    assert captured == []


def test_switched_off_ranges_leave_the_compiled_model_one_graph():
    """With its ranges off, the whole model compiles to one graph. Under torch 2.11 an own no-op context-manager
    class broke the graph at every `with`: the large preset's compiled step split into ~10 graphs per layer and was
    host-bound (docs/results/anomaly_h200_2026-12-01.md)."""
    import torch

    from src.model import ModelConfig, TransformerLM

    nvtx.configure(harness=True, model=False)  # what the runner sets under --compile
    try:
        model = TransformerLM(ModelConfig(d_model=32, d_ff=64, num_layers=2, num_heads=2, vocab_size=50,
                                          context_length=16, attention="sdpa"))
        torch._dynamo.reset()
        explained = torch._dynamo.explain(lambda ids: model(ids).sum())(torch.randint(0, 50, (2, 16)))
    finally:
        nvtx.configure(harness=False, model=False)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
