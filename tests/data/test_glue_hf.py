"""load_split_hf through the real Hugging Face ``datasets`` code, on local files written here (no network)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

# Belt and braces: never reach the Hub from these tests (effective when datasets is first imported here).
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

datasets = pytest.importorskip("datasets")

from beexformer.data.glue import TASKS, Example, load_split, load_split_hf  # noqa: E402
from beexformer.errors import DataError  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "glue"


def _write_parquet(path: Path, columns: dict[str, list[Any]], label_names: list[str] | None) -> Path:
    """A parquet file as ``nyu-mll/glue`` ships them: ClassLabel features kept in the schema metadata."""
    features = {name: datasets.Value("string") for name in columns if name != "label"}
    if "label" in columns:
        features["label"] = datasets.ClassLabel(names=label_names) if label_names else datasets.Value("float32")
    features["idx"] = datasets.Value("int32")
    n = len(next(iter(columns.values())))
    ds = datasets.Dataset.from_dict({**columns, "idx": list(range(n))}, features=datasets.Features(features))
    ds.to_parquet(str(path))
    return path


def test_parquet_matches_file_loader(tmp_path: Path) -> None:
    # The RTE fixture, rewritten in the nyu-mll/glue layout (ClassLabel indices), must load identically.
    rows = load_split("rte", "dev", FIXTURES)
    path = _write_parquet(
        tmp_path / "rte-validation.parquet",
        {
            "sentence1": [r.text_a for r in rows],
            "sentence2": [r.text_b for r in rows],
            "label": [r.label for r in rows],
        },
        TASKS["rte"].label_list,
    )
    got = load_split_hf("rte", "dev", data_files=str(path), cache_dir=tmp_path / "cache")
    assert got == rows


def test_parquet_with_other_classlabel_order_is_remapped(tmp_path: Path) -> None:
    # A dataset whose ClassLabel order differs from ours: indices go through the names.
    names = ["contradiction", "entailment", "neutral"]  # the order of the old transformers processors
    path = _write_parquet(
        tmp_path / "mnli.parquet",
        {"premise": ["p0", "p1", "p2"], "hypothesis": ["h0", "h1", "h2"], "label": [0, 1, 2]},
        names,
    )
    got = load_split_hf("mnli", "dev_mismatched", data_files=str(path), cache_dir=tmp_path / "cache")
    mnli = TASKS["mnli"].label_list
    assert [mnli[e.label] for e in got] == names  # type: ignore[index]
    assert got[0] == Example("p0", "h0", mnli.index("contradiction"))


def test_stsb_floats_and_test_minus_one(tmp_path: Path) -> None:
    path = _write_parquet(
        tmp_path / "stsb.parquet",
        {"sentence1": ["a", "b", "c"], "sentence2": ["x", "y", "z"], "label": [5.0, 2.5, 0.0]},
        None,
    )
    got = load_split_hf("stsb", "train", data_files=str(path), cache_dir=tmp_path / "cache")
    assert [e.label for e in got] == [5.0, 2.5, 0.0]
    test = _write_parquet(
        tmp_path / "stsb-test.parquet", {"sentence1": ["a"], "sentence2": ["b"], "label": [-1.0]}, None
    )
    assert load_split_hf("stsb", "test", data_files=str(test), cache_dir=tmp_path / "cache") == [
        Example("a", "b", None)
    ]


def test_classification_test_split_minus_one_is_unlabeled(tmp_path: Path) -> None:
    path = _write_parquet(tmp_path / "sst2-test.parquet", {"sentence": ["good . ", "bad ."], "label": [-1, -1]}, None)
    got = load_split_hf("sst2", "test", data_files=str(path), cache_dir=tmp_path / "cache")
    assert got == [Example("good .", None, None), Example("bad .", None, None)]


def test_jsonl_with_label_names(tmp_path: Path) -> None:
    path = tmp_path / "qnli.jsonl"
    rows = [
        {"question": "Who?", "sentence": "Him.", "label": "entailment"},
        {"question": "When?", "sentence": "Never.", "label": "not_entailment"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    got = load_split_hf("QNLI", "validation", data_files=str(path), cache_dir=tmp_path / "cache")
    assert got == [Example("Who?", "Him.", 0), Example("When?", "Never.", 1)]


def test_csv_with_int_labels(tmp_path: Path) -> None:
    path = tmp_path / "cola.csv"
    path.write_text('sentence,label,idx\n"The cat sat.",1,0\n"Cat the sat.",0,1\n', encoding="utf-8")
    got = load_split_hf("cola", "train", data_files=str(path), cache_dir=tmp_path / "cache")
    assert got == [Example("The cat sat.", None, 1), Example("Cat the sat.", None, 0)]


def test_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "mrpc.jsonl"
    path.write_text(json.dumps({"text": "a", "label": 1}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"mrpc\.jsonl: missing column\(s\) sentence1, sentence2 \(found text, label"):
        load_split_hf("mrpc", "train", data_files=str(path), cache_dir=tmp_path / "cache")


def test_unknown_label(tmp_path: Path) -> None:
    path = tmp_path / "wnli.jsonl"
    path.write_text(
        json.dumps({"sentence1": "a", "sentence2": "b", "label": 1})
        + "\n"
        + json.dumps({"sentence1": "a", "sentence2": "b", "label": 7})
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"wnli\.jsonl:2: unknown label 7 for WNLI"):
        load_split_hf("wnli", "train", data_files=str(path), cache_dir=tmp_path / "cache")


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot tell the file format"):
        load_split_hf("sst2", "train", data_files=str(tmp_path / "x.xlsx"))


def test_hub_call_uses_glue_config_and_split(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without data_files the loader asks the Hub for nyu-mll/glue; check the names it passes, offline.
    calls: list[tuple[Any, ...]] = []

    def fake_load_dataset(*args: Any, **kwargs: Any) -> Any:
        calls.append((*args, kwargs["split"]))
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(DataError, match=r"nyu-mll/glue/mnli/validation_matched: cannot load from Hugging Face"):
        load_split_hf("MNLI", "dev")
    with pytest.raises(DataError):
        load_split_hf("STS-B", "train")
    assert calls == [("nyu-mll/glue", "mnli", "validation_matched"), ("nyu-mll/glue", "stsb", "train")]


def test_broken_local_file(tmp_path: Path) -> None:
    path = tmp_path / "rte.jsonl"
    path.write_text('{"sentence1": "a", "sentence2": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"rte\.jsonl: cannot load with datasets") as err:
        load_split_hf("rte", "train", data_files=str(path), cache_dir=tmp_path / "cache")
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"missing\.parquet: cannot load with datasets"):
        load_split_hf("rte", "train", data_files=str(tmp_path / "missing.parquet"), cache_dir=tmp_path / "c")
