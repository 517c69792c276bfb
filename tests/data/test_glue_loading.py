"""GLUE registry and file loader: every task on small fixtures, the real shared files, and every bad input."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from beexformer.data.glue import TASKS, Example, get_task, load_split, resolve_data_dir, split_filename
from beexformer.errors import DataError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "glue"


# ---------------------------------------------------------------------------------------------------------
# Registry


def test_registry_has_the_nine_tasks() -> None:
    assert sorted(TASKS) == sorted(["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"])
    for task in TASKS.values():
        assert task.main_metric in task.metric_names
        assert task.num_labels == (1 if task.is_regression else len(task.label_list))
    assert TASKS["stsb"].is_regression and TASKS["stsb"].label_list == []
    assert TASKS["cola"].main_metric == "matthews"
    assert TASKS["mrpc"].metric_names == ("f1", "accuracy") and TASKS["qqp"].main_metric == "f1"
    assert TASKS["stsb"].metric_names == ("pearson", "spearman")
    assert TASKS["mnli"].dev_splits == ("dev_matched", "dev_mismatched") and TASKS["mnli"].num_labels == 3
    assert [t.name for t in TASKS.values() if not t.is_pair] == ["cola", "sst2"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("SST-2", "sst2"), ("sst2", "sst2"), ("sst-2", "sst2"), ("STS-B", "stsb"), ("sts_b", "stsb"),
     ("CoLA", "cola"), ("MNLI", "mnli"), ("qqp", "qqp")],
)  # fmt: skip
def test_get_task_accepts_spellings(name: str, expected: str) -> None:
    assert get_task(name).name == expected
    assert get_task(get_task(name)) is TASKS[expected]


def test_get_task_unknown_lists_valid_names() -> None:
    with pytest.raises(DataError, match=r"unknown GLUE task 'sst5'.*sst2 \(SST-2\).*wnli") as err:
        get_task("sst5")
    assert "\n" not in str(err.value)


def test_split_filenames() -> None:
    assert split_filename("mnli", "dev") == "dev_matched.tsv"
    assert split_filename("mnli", "validation_mismatched") == "dev_mismatched.tsv"
    assert split_filename("mnli", "test") == "test_matched.tsv"
    assert split_filename("rte", "validation") == "dev.tsv"
    with pytest.raises(DataError, match="unknown split 'dev_matched' for RTE"):
        split_filename("rte", "dev_matched")


def test_task_is_hashable() -> None:
    assert len({TASKS["sst2"], TASKS["sst2"]}) == 1


# ---------------------------------------------------------------------------------------------------------
# Every task on the fixtures: first example, label indices, and the quirks


def test_cola_no_header_and_no_final_newline() -> None:
    train = load_split("cola", "train", FIXTURES)
    assert len(train) == 6
    assert train[0] == Example("Our friends won't buy this analysis, let alone the next one we propose.", None, 1)
    assert train[4] == Example("They drank the pub.", None, 0)
    dev = load_split("CoLA", "dev", FIXTURES)  # the fixture, like the original, has no final newline
    assert len(dev) == 6 and dev[-1].text_a == "John talked to Bill about himself."
    assert sorted(Counter(e.label for e in dev).items()) == [(0, 2), (1, 4)]


def test_sst2_trailing_space_is_stripped() -> None:
    train = load_split("sst2", "train", FIXTURES)
    assert train[0] == Example("hide new secretions from the parental units", None, 0)
    assert [e.label for e in train] == [0, 0, 1, 0, 0, 0]
    assert "clichés" in train[4].text_a  # UTF-8 text
    assert all(e.text_b is None for e in train)


def test_mrpc_bom_header() -> None:
    train = load_split("mrpc", "train", FIXTURES)
    assert len(train) == 6 and [e.label for e in train] == [1, 0, 1, 0, 1, 1]
    # Unbalanced and balanced double quotes are plain characters (no quote processing).
    assert train[0].text_a.startswith('Amrozi accused his brother , whom he called " the witness "')
    assert train[0].text_b is not None and train[0].text_b.startswith("Referring to him")
    dev = load_split("mrpc", "dev", FIXTURES)
    assert dev[0].text_b == '" The foodservice pie business does not fit our long-term growth strategy .'


def test_qqp_fixture() -> None:
    train = load_split("qqp", "train", FIXTURES)
    assert train[0] == Example("How do I learn to cook rice?", "What is the best way to cook rice?", 1)
    assert train[1].text_b == 'Is the "blue sky effect real?'
    assert [e.label for e in train] == [1, 0, 1, 0, 1]
    assert load_split("qqp", "dev", FIXTURES)[2].text_a == 'What is a 6" sub?'
    test = load_split("qqp", "test", FIXTURES)
    assert test[1] == Example("How old is the universe?", "What is the age of the universe?", None)


def test_stsb_float_scores() -> None:
    train = load_split("STS-B", "train", FIXTURES)
    assert train[0] == Example("A plane is taking off.", "An air plane is taking off.", 5.0)
    assert [e.label for e in train] == [5.0, 3.8, 3.8, 2.6, 4.25, 4.25]
    assert all(isinstance(e.label, float) for e in train)
    assert load_split("stsb", "dev", FIXTURES)[5].label == pytest.approx(2.615)


def test_mnli_varying_column_counts() -> None:
    # train has 12 columns, dev 16, test 10: columns are found by header name.
    train = load_split("mnli", "train", FIXTURES)
    assert train[0] == Example("The committee met on Tuesday.", "The committee met this week.", 0)
    assert [e.label for e in train] == [0, 2, 1, 0]  # entailment, contradiction, neutral, entailment
    assert train[1].text_a == "I don't know, it was \"fine I guess."
    matched = load_split("mnli", "dev", FIXTURES)
    assert matched == load_split("mnli", "dev_matched", FIXTURES)
    assert [e.label for e in matched] == [1, 2, 0]
    mismatched = load_split("mnli", "dev_mismatched", FIXTURES)
    assert [e.label for e in mismatched] == [2, 1]
    test = load_split("mnli", "test", FIXTURES)
    assert test == [Example("Hats off to the winners.", "The winners got hats.", None)]


def test_qnli_rte_wnli_labels() -> None:
    qnli = load_split("qnli", "dev", FIXTURES)
    assert qnli[0].text_a == "What came into force after the new constitution was herald?"
    assert [e.label for e in qnli] == [0, 1, 1, 0, 1, 1]  # entailment = 0 (HF order)
    assert [e.label for e in load_split("qnli", "train", FIXTURES)] == [0, 1]
    rte = load_split("rte", "train", FIXTURES)
    assert rte[0] == Example(
        "No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq.", 1
    )
    wnli = load_split("wnli", "train", FIXTURES)
    assert wnli[0].text_b == "The carrot had a hole." and wnli[0].label == 1  # 1 = entailment
    assert TASKS["wnli"].label_list[1] == "entailment"


def test_test_splits_have_no_labels() -> None:
    sst = load_split("sst2", "test", FIXTURES)
    assert sst == [
        Example("a gorgeous , witty film .", None, None),
        Example("dull and overlong .", None, None),
    ]
    # CoLA test has a header, unlike CoLA train/dev.
    assert load_split("cola", "test", FIXTURES)[0] == Example("Bill whistled past the house.", None, None)


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_loads_train_and_dev_fixture(name: str) -> None:
    task = TASKS[name]
    for split in ("train", *task.dev_splits):
        examples = load_split(task, split, FIXTURES)
        assert examples, split
        for ex in examples:
            assert ex.text_a and (ex.text_b is not None) == task.is_pair
            if task.is_regression:
                assert isinstance(ex.label, float) and 0.0 <= ex.label <= 5.0
            else:
                assert isinstance(ex.label, int) and 0 <= ex.label < task.num_labels


# ---------------------------------------------------------------------------------------------------------
# The real shared files: counts and label distributions of SOURCES.md

REAL_COUNTS = {
    ("cola", "dev"): 1043,
    ("cola", "train"): 8551,
    ("sst2", "train"): 67349,
    ("mrpc", "train"): 3668,
    ("rte", "train"): 2490,
    ("stsb", "train"): 5749,
    ("stsb", "dev"): 1500,
    ("wnli", "train"): 635,
}
REAL_DEV_LABELS = {
    "sst2": {0: 428, 1: 444},
    "mrpc": {0: 129, 1: 279},
    "rte": {0: 146, 1: 131},  # entailment 146, not_entailment 131
    "wnli": {0: 40, 1: 31},
    "qnli": {0: 2702, 1: 2761},  # entailment 2702, not_entailment 2761
}


@pytest.mark.parametrize(("name", "counts"), list(REAL_DEV_LABELS.items()))
def test_real_dev_label_counts(glue_dir: Path, name: str, counts: dict[int, int]) -> None:
    assert dict(Counter(e.label for e in load_split(name, "dev", glue_dir))) == counts


def test_real_row_counts(glue_dir: Path) -> None:
    for (name, split), n in REAL_COUNTS.items():
        examples = load_split(name, split, glue_dir)
        assert len(examples) == n, (name, split)
    sst_train = Counter(e.label for e in load_split("sst2", "train", glue_dir))
    assert sst_train == {0: 29780, 1: 37569}
    rte_train = Counter(e.label for e in load_split("rte", "train", glue_dir))
    assert rte_train == {0: 1249, 1: 1241}
    stsb = [e.label for e in load_split("stsb", "dev", glue_dir)]
    assert min(stsb) == 0.0 and max(stsb) == 5.0


def test_real_missing_files_named(glue_dir: Path) -> None:
    for name, split in (("qqp", "train"), ("mnli", "dev"), ("qnli", "train")):
        if (glue_dir / get_task(name).dir_name / split_filename(name, split)).exists():
            continue
        with pytest.raises(DataError, match=r"file not found.*may need downloading"):
            load_split(name, split, glue_dir)


def test_real_fixtures_are_cut_from_the_shared_files(glue_dir: Path) -> None:
    # Every fixture row of a shipped file is a line of the real file, so the quirks are the real ones.
    for path in FIXTURES.glob("*/*.tsv"):
        real = glue_dir / path.parent.name / path.name
        if not real.exists() or path.name.startswith("test"):
            continue
        real_lines = set(real.read_bytes().split(b"\n"))
        fixture_lines = [line for line in path.read_bytes().split(b"\n") if line]
        assert all(line in real_lines for line in fixture_lines), path


# ---------------------------------------------------------------------------------------------------------
# Data directory resolution


def test_resolve_data_dir_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLUE_DIR", str(FIXTURES))
    assert resolve_data_dir(None) == FIXTURES
    assert load_split("sst2", "dev") == load_split("sst2", "dev", FIXTURES)


def test_resolve_data_dir_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GLUE_DIR", raising=False)
    with pytest.raises(DataError, match=r"no GLUE data directory given \(pass --data-dir or set the GLUE_DIR"):
        resolve_data_dir(None)
    with pytest.raises(DataError, match=r"nowhere: GLUE data directory not found"):
        resolve_data_dir(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------------------
# Bad inputs: one line, naming file and line


def _copy_task(tmp_path: Path, task_dir: str) -> Path:
    shutil.copytree(FIXTURES / task_dir, tmp_path / task_dir)
    return tmp_path / task_dir


def _assert_one_line(err: pytest.ExceptionInfo[DataError]) -> None:
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    (tmp_path / "MNLI").mkdir()
    with pytest.raises(DataError, match=r"MNLI/dev_matched\.tsv: file not found.*QQP, MNLI") as err:
        load_split("mnli", "dev", tmp_path)
    _assert_one_line(err)


def test_missing_file_lists_present_files(tmp_path: Path) -> None:
    _copy_task(tmp_path, "QNLI").joinpath("train.tsv").unlink()
    with pytest.raises(DataError, match=r"QNLI/train\.tsv: file not found.*holds: dev\.tsv"):
        load_split("qnli", "train", tmp_path)


def test_wrong_column_count(tmp_path: Path) -> None:
    path = _copy_task(tmp_path, "RTE") / "dev.tsv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3] + "\textra"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"RTE/dev\.tsv:4: 5 tab-separated fields, expected 4") as err:
        load_split("rte", "dev", tmp_path)
    _assert_one_line(err)


def test_wrong_column_count_headerless_cola(tmp_path: Path) -> None:
    path = _copy_task(tmp_path, "CoLA") / "train.tsv"
    path.write_bytes(path.read_bytes() + b"gj04\t1\tA sentence with a missing column.\n")
    with pytest.raises(DataError, match=r"CoLA/train\.tsv:7: 3 tab-separated fields, expected 4.*no header"):
        load_split("cola", "train", tmp_path)


def test_wrong_header(tmp_path: Path) -> None:
    # An RTE file put where MRPC is expected.
    mrpc = tmp_path / "MRPC"
    mrpc.mkdir()
    shutil.copy(FIXTURES / "RTE" / "train.tsv", mrpc / "train.tsv")
    with pytest.raises(DataError, match=r"MRPC/train\.tsv:1: header lacks column\(s\) #1 String, #2 String, Quality"):
        load_split("mrpc", "train", tmp_path)


def test_header_in_headerless_cola(tmp_path: Path) -> None:
    path = _copy_task(tmp_path, "CoLA") / "train.tsv"
    path.write_bytes(b"source\tlabel\torig\tsentence\n" + path.read_bytes())
    with pytest.raises(DataError, match=r"CoLA/train\.tsv:1: unknown label 'label'.*no header row"):
        load_split("cola", "train", tmp_path)


def test_empty_line(tmp_path: Path) -> None:
    path = _copy_task(tmp_path, "SST-2") / "train.tsv"
    lines = path.read_bytes().split(b"\n")
    lines.insert(3, b"")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=r"SST-2/train\.tsv:4: empty line") as err:
        load_split("sst2", "train", tmp_path)
    _assert_one_line(err)


def test_empty_file(tmp_path: Path) -> None:
    (_copy_task(tmp_path, "WNLI") / "dev.tsv").write_bytes(b"")
    with pytest.raises(DataError, match=r"WNLI/dev\.tsv:1: file is empty"):
        load_split("wnli", "dev", tmp_path)


def test_non_utf8_line(tmp_path: Path) -> None:
    path = _copy_task(tmp_path, "SST-2") / "dev.tsv"
    lines = path.read_bytes().split(b"\n")
    lines[5] = "caf\u00e9 au lait \t1".encode("latin-1")  # a Latin-1 é
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=r"SST-2/dev\.tsv:6: not valid UTF-8 \(byte 0xe9") as err:
        load_split("sst2", "dev", tmp_path)
    _assert_one_line(err)


@pytest.mark.parametrize(
    ("task_dir", "name", "line", "old", "new", "pattern"),
    [
        ("SST-2", "sst2", 3, "\t0", "\t2", r"SST-2/train\.tsv:3: unknown label '2' for SST-2"),
        ("RTE", "rte", 2, "\tnot_entailment", "\tcontradiction", r"RTE/train\.tsv:2: unknown label 'contr"),
        ("STS-B", "stsb", 2, "\t5.000", "\tfive", r"STS-B/train\.tsv:2: label 'five' is not a number"),
        (
            "MNLI",
            "mnli",
            2,
            "\tentailment\tentailment",
            "\tentailment\t-",
            r"MNLI/train\.tsv:2: unknown label '-'",
        ),
    ],
)
def test_unknown_label(tmp_path: Path, task_dir: str, name: str, line: int, old: str, new: str, pattern: str) -> None:
    path = _copy_task(tmp_path, task_dir) / "train.tsv"
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[line - 1].endswith(old)
    lines[line - 1] = lines[line - 1][: -len(old)] + new
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataError, match=pattern) as err:
        load_split(name, "train", tmp_path)
    _assert_one_line(err)


def test_crlf_line_ends_are_accepted(tmp_path: Path) -> None:
    path = _copy_task(tmp_path, "WNLI") / "dev.tsv"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert load_split("wnli", "dev", tmp_path) == load_split("wnli", "dev", FIXTURES)


def test_header_only_file(tmp_path: Path) -> None:
    path = _copy_task(tmp_path, "RTE") / "dev.tsv"
    path.write_bytes(path.read_bytes().split(b"\n")[0] + b"\n")
    with pytest.raises(DataError, match=r"RTE/dev\.tsv:2: no examples after the header"):
        load_split("rte", "dev", tmp_path)


def test_stsb_score_out_of_range(tmp_path: Path) -> None:
    path = _copy_task(tmp_path, "STS-B") / "dev.tsv"
    path.write_text(path.read_text(encoding="utf-8").replace("\t4.750\n", "\t47.50\n"), encoding="utf-8")
    with pytest.raises(DataError, match=r"STS-B/dev\.tsv:3: score 47.50 is outside 0..5"):
        load_split("stsb", "dev", tmp_path)
