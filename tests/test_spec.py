"""RunSpec is the validated boundary: bad values and impossible combinations raise ValueError naming the field,
and the facts derived from several fields are worked out in one place."""

import dataclasses

import pytest

from src.spec import RunSpec, config_fields
from tests.specs import tiny_spec


@pytest.mark.parametrize("changes,field", [
    (dict(mode="sprint"), "mode"),
    (dict(precision="fp8"), "precision"),
    (dict(recipe="slow"), "recipe"),
    (dict(timer="stopwatch"), "timer"),
    (dict(device="tpu"), "device"),
    (dict(isolate="thread"), "isolate"),
    (dict(batch_size=0), "batch_size"),
    (dict(benchmark_steps=0), "benchmark_steps"),
    (dict(warmup_steps=-1), "warmup_steps"),
    (dict(compile="yes"), "compile"),
    (dict(peak_tflops=0.0), "peak_tflops"),
    (dict(d_model=63), "d_model"),
    (dict(attention="fastest"), "attention"),
    (dict(profile_steps=3, benchmark_steps=2), "profile_steps"),
    (dict(precision="fp16"), "precision"),
    (dict(timer="events"), "timer"),
    (dict(attention="flash"), "attention"),
    (dict(memory_snapshot="snap"), "memory_snapshot"),
    (dict(nvtx=True), "nvtx"),
    (dict(recipe="fast", precision="fp32"), "precision"),
    (dict(recipe="fast", precision="bf16", attention="naive"), "attention"),
    (dict(backend="hf_llama", attention="naive"), "attention"),
])
def test_a_bad_value_or_combination_is_a_value_error_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        tiny_spec(**changes)


def test_the_fast_recipe_compiles_and_its_row_says_so():
    spec = tiny_spec(recipe="fast", precision="bf16", attention="sdpa")
    assert spec.compile and spec.compiled and spec.to_dict()["compile"] is True
    assert not tiny_spec().compiled and tiny_spec(compile=True).compiled


def test_profiled_steps_default_to_every_measured_step():
    assert tiny_spec(benchmark_steps=4).profiled_steps == 4
    assert tiny_spec(benchmark_steps=4, profile_steps=2).profiled_steps == 2


def test_artifact_names_differ_across_every_swept_axis_and_are_file_safe():
    base = tiny_spec()
    axes = dict(batch_size=8, context_length=64, benchmark_steps=3, warmup_steps=0, mode="forward",
                precision="bf16", attention="sdpa", compile=True)
    names = {base.artifact_name} | {dataclasses.replace(base, **{k: v}).artifact_name for k, v in axes.items()}
    assert len(names) == 1 + len(axes)
    assert all(set(n) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") for n in names)


def test_config_fields_are_the_dataclass_fields_and_round_trip():
    spec = tiny_spec(batch_size=3, seed=7)
    assert config_fields() == tuple(spec.to_dict())
    assert RunSpec.from_dict({**spec.to_dict(), "not_a_field": 1}) == spec
