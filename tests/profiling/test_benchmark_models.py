"""--model through the benchmark on CPU: a GPT-2-shaped and a GQA config.json give ok rows that say what the model
is; a bad or unknown config is refused before any work in one line, exit 2."""

import json
import os

import pytest

from src.harness.results import read_records
from src.profiling.benchmark import main

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "model", "configs")
GPT2, LLAMA = os.path.join(CONFIGS, "gpt2-tiny.json"), os.path.join(CONFIGS, "llama-gqa-tiny.json")
QUICK = ["--device", "cpu", "--warmup_steps", "1", "--benchmark_steps", "2", "--context_length", "32"]


def test_a_gpt2_shaped_and_a_gqa_config_give_ok_rows_that_describe_the_model(tmp_path, capsys):
    output = tmp_path / "rows.jsonl"
    assert main(QUICK + ["--model", GPT2, LLAMA, "tiny", "--mode", "train", "--output", str(output)]) == 0
    out = capsys.readouterr().out
    records, _ = read_records(str(output))
    assert [r["status"] for r in records] == ["ok"] * 3 and out.count("| ok") == 3
    gpt2, llama, ours = records
    assert (gpt2["family"], gpt2["architecture"], gpt2["tied_embeddings"]) == ("hf", "gpt2", True)
    assert (llama["architecture"], llama["num_kv_heads"], llama["config"]["num_kv_heads"]) == ("llama", 2, 2)
    assert (ours["family"], ours["architecture"], ours["num_kv_heads"]) == ("cs336", "cs336", 4)
    for r in records:
        assert r["flops_method"] == "analytic" and r["active_parameters"] == r["parameters"] > 0
        assert r["config"]["attention"] == "sdpa" or r is ours
        assert r["env"].get("transformers_version") or r is ours
    assert llama["config"]["model"] == LLAMA and llama["config"]["size"] == "llama-gqa-tiny"


def test_num_layers_replaces_a_configs_and_a_presets_layer_count(tmp_path, capsys):
    """--model 10B --num_layers 2 is the 10B shape cut to 2 layers (the per-layer fp8 figures measure it so); it
    was ignored for presets before, and 10B's 50 layers would not fit."""
    output = tmp_path / "rows.jsonl"
    assert main(QUICK + ["--model", LLAMA, "small", "--num_layers", "1", "--mode", "forward",
                         "--output", str(output)]) == 0
    capsys.readouterr()
    rows, _ = read_records(str(output))
    assert [(r["config"]["num_layers"], r["status"]) for r in rows] == [(1, "ok"), (1, "ok")]
    assert rows[1]["config"]["size"] == "small" and rows[1]["config"]["d_model"] == 768


@pytest.mark.parametrize("content,message", [
    ("not json {", "not JSON"),
    ("[1, 2]", "holds a JSON object, this holds list"),
    ('{"hidden_size": 64}', "no model_type"),
    ('{"model_type": "vit", "hidden_size": 64}', "is not a causal LM"),
    ('{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 5, "num_hidden_layers": 1, '
     '"vocab_size": 32}', "refused the config"),
])
def test_a_bad_config_fails_before_any_work_with_one_line_and_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    output = tmp_path / "rows.jsonl"
    assert main(QUICK + ["--model", str(path), "--output", str(output)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and message in err, err
    assert not output.exists()


def test_an_unknown_model_name_is_refused_naming_what_there_is(capsys):
    assert main(QUICK + ["--model", "llama-99b"]) == 2
    err = capsys.readouterr().err
    assert "'llama-99b' is neither a preset" in err and "llama-3.2-1b" in err and len(err.strip().splitlines()) == 1


def test_explain_precision_works_on_a_hugging_face_model(capsys):
    assert main(["--device", "cpu", "--model", LLAMA, "--precision", "bf16", "--explain_precision"]) == 0
    out = capsys.readouterr().out
    assert "| hf.model.layers.*.input_layernorm | LlamaRMSNorm | float32 |" in out
    assert "| hf.model.layers.*.self_attn.k_proj | Linear | bfloat16 |" in out
