"""GLUE tasks: a registry of the nine tasks; loaders for the GLUE directory layout and HF datasets.

The file loader reads the layout written by the standard GLUE download script
(``<data_dir>/<TASK>/{train,dev,test}.tsv``; MNLI has ``dev_matched.tsv`` / ``dev_mismatched.tsv``). The
reading quirks of those files are handled:

- No quote processing at all (the equivalent of ``csv.QUOTE_NONE``): sentences hold unbalanced ``"``.
- A UTF-8 byte-order mark at the start of a file (MRPC) is dropped.
- CoLA train/dev have no header row (label = column 2, sentence = column 4); CoLA test does have one.
- Leading/trailing whitespace of sentences is stripped (SST-2 sentences end with a space before the tab).
- Columns are found by header name, so files with a varying number of columns (MNLI train has 12, MNLI dev
  16, test files have no label) are read the same way.

Every malformed input raises :class:`beexformer.errors.DataError` with a one-line message of the form
``path:line: what is wrong (what to do)``.

Labels are indices into ``GlueTask.label_list``, whose order is the one of the Hugging Face ``glue``
dataset, so that the file loader and :func:`load_split_hf` give the same indices. STS-B labels are floats.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beexformer.errors import DataError

__all__ = [
    "GlueTask",
    "Example",
    "TASKS",
    "get_task",
    "resolve_data_dir",
    "split_filename",
    "load_split",
    "load_split_hf",
    "read_tsv",
    "iter_texts",
    "GLUE_DIR_ENV",
]

GLUE_DIR_ENV = "GLUE_DIR"


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: where its files are, how their columns are laid out, its labels and its metrics.

    ``label_list`` follows the class order of the Hugging Face ``glue`` dataset; ``file_label_values`` holds,
    index-aligned, the strings the GLUE ``.tsv`` files use for the same labels (``"0"``/``"1"`` for most
    binary tasks, label names for MNLI/QNLI/RTE).
    """

    name: str
    dir_name: str
    label_list: list[str] = field(hash=False)
    num_labels: int
    is_regression: bool
    is_pair: bool
    metric_names: tuple[str, ...]
    main_metric: str
    dev_splits: tuple[str, ...]
    # Column layout of the GLUE .tsv files (names as in the header row).
    text_a_column: str
    text_b_column: str | None
    label_column: str
    file_label_values: tuple[str, ...] = ()
    # Train/dev files without a header row (CoLA): the column names to assume, in order.
    headerless_columns: tuple[str, ...] | None = None
    test_splits: tuple[str, ...] = ("test",)
    # Hugging Face "nyu-mll/glue" config and column names.
    hf_config: str = ""
    hf_text_a: str = ""
    hf_text_b: str | None = None

    @property
    def n_classes(self) -> int:
        """Alias of ``num_labels`` (1 for the regression task STS-B)."""
        return self.num_labels


def _task(
    name: str,
    dir_name: str,
    labels: Sequence[str],
    file_labels: Sequence[str],
    metrics: tuple[str, ...],
    text_a: str,
    text_b: str | None,
    label_column: str,
    hf_text_a: str,
    hf_text_b: str | None,
    *,
    regression: bool = False,
    headerless: tuple[str, ...] | None = None,
    dev_splits: tuple[str, ...] = ("dev",),
    test_splits: tuple[str, ...] = ("test",),
) -> GlueTask:
    return GlueTask(
        name=name,
        dir_name=dir_name,
        label_list=list(labels),
        num_labels=1 if regression else len(labels),
        is_regression=regression,
        is_pair=text_b is not None,
        metric_names=metrics,
        main_metric=metrics[0],
        dev_splits=dev_splits,
        text_a_column=text_a,
        text_b_column=text_b,
        label_column=label_column,
        file_label_values=tuple(file_labels),
        headerless_columns=headerless,
        test_splits=test_splits,
        hf_config=name,
        hf_text_a=hf_text_a,
        hf_text_b=hf_text_b,
    )


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        _task(
            "cola",
            "CoLA",
            ("unacceptable", "acceptable"),
            _BINARY,
            ("matthews",),
            "sentence",
            None,
            "label",
            "sentence",
            None,
            headerless=("source", "label", "original_label", "sentence"),
        ),
        _task(
            "sst2",
            "SST-2",
            ("negative", "positive"),
            _BINARY,
            ("accuracy",),
            "sentence",
            None,
            "label",
            "sentence",
            None,
        ),
        _task(
            "mrpc",
            "MRPC",
            ("not_equivalent", "equivalent"),
            _BINARY,
            ("f1", "accuracy"),
            "#1 String",
            "#2 String",
            "Quality",
            "sentence1",
            "sentence2",
        ),
        _task(
            "qqp",
            "QQP",
            ("not_duplicate", "duplicate"),
            _BINARY,
            ("f1", "accuracy"),
            "question1",
            "question2",
            "is_duplicate",
            "question1",
            "question2",
        ),
        _task(
            "stsb",
            "STS-B",
            (),
            (),
            ("pearson", "spearman"),
            "sentence1",
            "sentence2",
            "score",
            "sentence1",
            "sentence2",
            regression=True,
        ),
        _task(
            "mnli",
            "MNLI",
            ("entailment", "neutral", "contradiction"),
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            "sentence1",
            "sentence2",
            "gold_label",
            "premise",
            "hypothesis",
            dev_splits=("dev_matched", "dev_mismatched"),
            test_splits=("test_matched", "test_mismatched"),
        ),
        _task(
            "qnli",
            "QNLI",
            _NLI2,
            _NLI2,
            ("accuracy",),
            "question",
            "sentence",
            "label",
            "question",
            "sentence",
        ),
        _task(
            "rte",
            "RTE",
            _NLI2,
            _NLI2,
            ("accuracy",),
            "sentence1",
            "sentence2",
            "label",
            "sentence1",
            "sentence2",
        ),
        _task(
            "wnli",
            "WNLI",
            ("not_entailment", "entailment"),
            _BINARY,
            ("accuracy",),
            "sentence1",
            "sentence2",
            "label",
            "sentence1",
            "sentence2",
        ),
    )
}


def _normalize_name(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_ALIASES: dict[str, str] = {_normalize_name(t.dir_name): t.name for t in TASKS.values()}
_ALIASES.update({t.name: t.name for t in TASKS.values()})
_ALIASES.update({"sts": "stsb", "mnlim": "mnli", "mnlimm": "mnli"})


def get_task(name: str | GlueTask) -> GlueTask:
    """Return the task named ``name``; case, dashes and underscores are ignored ("SST-2", "sst_2", "sst2").

    Raises:
        DataError: the name is not one of the nine GLUE tasks (the message lists them).
    """
    if isinstance(name, GlueTask):
        return name
    key = _ALIASES.get(_normalize_name(str(name)))
    if key is None:
        valid = ", ".join(f"{t.name} ({t.dir_name})" for t in TASKS.values())
        raise DataError(f"unknown GLUE task {name!r} (valid tasks: {valid})")
    return TASKS[key]


@dataclass
class Example:
    """One example: a sentence or a sentence pair and its label.

    ``label`` is an index into ``GlueTask.label_list`` (a float score for STS-B), or None when the split has
    no labels (GLUE test files).
    """

    text_a: str
    text_b: str | None
    label: int | float | None


def iter_texts(examples: Iterable[Example]) -> Iterator[str]:
    """Yield every text of ``examples`` (``text_a`` and, for pairs, ``text_b``), e.g. to train a tokenizer."""
    for ex in examples:
        yield ex.text_a
        if ex.text_b is not None:
            yield ex.text_b


# ----------------------------------------------------------------------------------------------------------
# Files


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """The GLUE data directory: ``data_dir`` if given, else the ``GLUE_DIR`` environment variable.

    Raises:
        DataError: neither is set, or the directory does not exist.
    """
    if data_dir is None or str(data_dir) == "":
        env = os.environ.get(GLUE_DIR_ENV, "")
        if not env:
            raise DataError(
                f"no GLUE data directory given (pass --data-dir or set the {GLUE_DIR_ENV} environment "
                "variable to the folder holding CoLA/, SST-2/, ...)"
            )
        data_dir = env
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(
            f"{path}: GLUE data directory not found (pass --data-dir or set {GLUE_DIR_ENV} to the folder "
            "written by the GLUE download script)"
        )
    return path


_SPLIT_ALIASES = {
    "train": "train",
    "dev": "dev",
    "validation": "dev",
    "val": "dev",
    "dev_matched": "dev_matched",
    "validation_matched": "dev_matched",
    "dev_mismatched": "dev_mismatched",
    "validation_mismatched": "dev_mismatched",
    "test": "test",
    "test_matched": "test_matched",
    "test_mismatched": "test_mismatched",
}


def _canonical_split(task: GlueTask, split: str) -> str:
    """Map a split name to the GLUE file stem (``dev`` -> ``dev_matched`` on MNLI)."""
    canon = _SPLIT_ALIASES.get(split.lower().replace("-", "_"))
    if canon == "dev" and task.dev_splits != ("dev",):
        canon = task.dev_splits[0]
    elif canon == "test" and task.test_splits != ("test",):
        canon = task.test_splits[0]
    valid = ("train", *task.dev_splits, *task.test_splits)
    if canon not in valid:
        names = ", ".join(valid if task.dev_splits == ("dev",) else ("train", "dev", *valid[1:]))
        raise DataError(f"unknown split {split!r} for {task.dir_name} (valid splits: {names})")
    return canon


def split_filename(task: GlueTask | str, split: str) -> str:
    """The file name of ``split`` in the GLUE layout, e.g. ``dev_matched.tsv`` for MNLI ``dev``."""
    task = get_task(task)
    return f"{_canonical_split(task, split)}.tsv"


def read_tsv(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for each line of a tab-separated file, without any quote processing.

    A UTF-8 byte-order mark is dropped; ``\\r\\n`` line ends are accepted.

    Raises:
        DataError: a line is not valid UTF-8, or is empty.
    """
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            raw = raw.rstrip(b"\n").rstrip(b"\r")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad = raw[err.start : err.start + 1].hex()
                raise DataError(
                    f"{path}:{lineno}: not valid UTF-8 (byte 0x{bad} at byte {err.start + 1} of the line; "
                    "re-save the file as UTF-8)"
                ) from None
            if not line.strip():
                raise DataError(f"{path}:{lineno}: empty line (remove it; every line must hold one example)")
            yield lineno, line.split("\t")


def _missing_file_error(task: GlueTask, path: Path, data_dir: Path) -> DataError:
    present = sorted(p.name for p in (data_dir / task.dir_name).glob("*.tsv"))
    have = f"; {data_dir / task.dir_name} holds: {', '.join(present)}" if present else ""
    return DataError(
        f"{path}: file not found (GLUE layout <data-dir>/{task.dir_name}/<split>.tsv expected{have}; "
        "large tasks such as QQP, MNLI and QNLI train may need downloading with the GLUE download script, "
        "or load them from Hugging Face datasets)"
    )


def _parse_label(task: GlueTask, value: str, path: Path, lineno: int) -> int | float:
    value = value.strip()
    if task.is_regression:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise DataError(f"{path}:{lineno}: label {value!r} is not a number (STS-B scores are floats in 0..5)")
        if not 0.0 <= score <= 5.0:
            raise DataError(f"{path}:{lineno}: score {value} is outside 0..5 (STS-B similarity scores)")
        return score
    try:
        return task.file_label_values.index(value)
    except ValueError:
        allowed = ", ".join(repr(v) for v in task.file_label_values)
        hint = "; this file has no header row" if task.headerless_columns and lineno == 1 else ""
        raise DataError(
            f"{path}:{lineno}: unknown label {value!r} for {task.dir_name} (expected one of {allowed}{hint})"
        ) from None


def load_split(task: GlueTask | str, split: str, data_dir: str | os.PathLike[str] | None = None) -> list[Example]:
    """Read one split of a task from a directory in the GLUE download-script layout.

    Args:
        task: a :class:`GlueTask` or a task name ("SST-2", "sst2", ...).
        split: "train", "dev" (MNLI: dev_matched), "dev_matched", "dev_mismatched", "test" (MNLI:
            test_matched), "test_mismatched"; "validation" is accepted for "dev".
        data_dir: the GLUE folder; None means the ``GLUE_DIR`` environment variable.

    Returns:
        The examples in file order. Test splits (no label column) give ``label=None``.

    Raises:
        DataError: missing file, wrong header or column count, empty or non-UTF-8 line, unknown label.
    """
    task = get_task(task)
    root = resolve_data_dir(data_dir)
    stem = _canonical_split(task, split)
    path = root / task.dir_name / f"{stem}.tsv"
    if not path.is_file():
        raise _missing_file_error(task, path, root)

    rows = read_tsv(path)
    is_test = stem.startswith("test")
    if task.headerless_columns is not None and not is_test:
        # CoLA train/dev: no header row, fixed columns. A header line would fail as an unknown label.
        header = list(task.headerless_columns)
    else:
        first = next(rows, None)
        if first is None:
            raise DataError(f"{path}:1: file is empty (expected a header row; re-download the file)")
        header = [h.strip() for h in first[1]]

    required = [task.text_a_column] + ([task.text_b_column] if task.text_b_column else [])
    if not is_test:
        required.append(task.label_column)
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            f"{path}:1: header lacks column(s) {', '.join(missing)} (found {' | '.join(header)}; a "
            f"{task.dir_name} {stem} file needs {' | '.join(required)}; is this a file of another task?)"
        )
    ia = header.index(task.text_a_column)
    ib = header.index(task.text_b_column) if task.text_b_column else None
    il = header.index(task.label_column) if task.label_column in header else None
    ncol = len(header)
    layout = "columns" if task.headerless_columns is None or is_test else "columns (no header row)"

    examples: list[Example] = []
    for lineno, fields in rows:
        if len(fields) != ncol:
            raise DataError(
                f"{path}:{lineno}: {len(fields)} tab-separated fields, expected {ncol} {layout}: "
                f"{' | '.join(header)} (check for stray tabs, or a file of another task)"
            )
        label = _parse_label(task, fields[il], path, lineno) if il is not None else None
        text_b = fields[ib].strip() if ib is not None else None
        examples.append(Example(fields[ia].strip(), text_b, label))
    if not examples:
        raise DataError(f"{path}:2: no examples after the header (the file is truncated; re-download it)")
    return examples


# ----------------------------------------------------------------------------------------------------------
# Hugging Face datasets

_HF_SPLITS = {
    "train": "train",
    "dev": "validation",
    "dev_matched": "validation_matched",
    "dev_mismatched": "validation_mismatched",
    "test": "test",
    "test_matched": "test_matched",
    "test_mismatched": "test_mismatched",
}

_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}


def _builder_for(data_files: Any) -> tuple[str, dict[str, Any]]:
    """Pick the ``datasets`` packaged builder from the data files' extension."""
    first = data_files
    while isinstance(first, (list, tuple, dict)):
        first = next(iter(first.values() if isinstance(first, dict) else first), "")
    suffix = Path(str(first)).suffix.lower()
    builder = _BUILDERS.get(suffix)
    if builder is None:
        raise DataError(
            f"{first}: cannot tell the file format from the extension {suffix!r} "
            f"(use one of {', '.join(sorted(_BUILDERS))})"
        )
    kwargs: dict[str, Any] = {"sep": "\t"} if suffix == ".tsv" else {}
    return builder, kwargs


def _hf_label(
    task: GlueTask, value: Any, names: Sequence[str] | None, where: str, row: int, is_test: bool
) -> int | float | None:
    if value is None:
        return None
    if task.is_regression:
        score = float(value)
        # Hugging Face marks the unlabeled STS-B test rows with -1 (real scores are in 0..5).
        return None if is_test and score == -1.0 else score
    if isinstance(value, str):
        if value in task.label_list:
            return task.label_list.index(value)
        if value in task.file_label_values:
            return task.file_label_values.index(value)
        raise DataError(f"{where}:{row}: unknown label {value!r} for {task.dir_name} (expected {task.label_list})")
    index = int(value)
    if index == -1:  # Hugging Face marks the unlabeled GLUE test rows with -1
        return None
    if names and list(names) != task.label_list:
        # A dataset whose ClassLabel order differs from ours: go through the names.
        if not 0 <= index < len(names) or names[index] not in task.label_list:
            raise DataError(f"{where}:{row}: unknown label {value!r} for {task.dir_name} (names {list(names)})")
        return task.label_list.index(names[index])
    if not 0 <= index < task.num_labels:
        raise DataError(
            f"{where}:{row}: unknown label {value!r} for {task.dir_name} "
            f"(expected 0..{task.num_labels - 1} = {task.label_list}, or -1 for unlabeled)"
        )
    return index


def load_split_hf(
    task: GlueTask | str,
    split: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    data_files: str | Sequence[str] | dict[str, Any] | None = None,
) -> list[Example]:
    """Load a split through Hugging Face ``datasets`` and map it to :class:`Example` s.

    Without ``data_files`` this loads the ``nyu-mll/glue`` dataset (config = task name; needs network or a
    filled cache). With ``data_files`` (local ``.parquet``, ``.csv``, ``.tsv``, ``.json`` or ``.jsonl``
    files in the column layout of ``nyu-mll/glue``) it loads those instead, which is also how this function
    is tested offline. Labels may be ClassLabel indices (``-1`` = unlabeled) or label names; they are mapped
    to the same indices as :func:`load_split`. Test splits of ``nyu-mll/glue`` give ``label=None``.

    Raises:
        DataError: ``datasets`` is not installed, the dataset cannot be loaded, or a column or label is wrong.
    """
    task = get_task(task)
    stem = _canonical_split(task, split)
    hf_split = _HF_SPLITS[stem]
    try:
        import datasets  # lazy: optional dependency, and slow to import
    except ImportError:
        raise DataError(
            "Hugging Face datasets is not installed (pip install 'beexformer[hf]', or use --data-dir)"
        ) from None

    cache = str(cache_dir) if cache_dir is not None else None
    if data_files is not None:
        builder, kwargs = _builder_for(data_files)
        files = data_files if isinstance(data_files, dict) else {hf_split: data_files}
        mine = files.get(hf_split, data_files)
        where = str(mine if isinstance(mine, (str, os.PathLike)) else next(iter(mine), "data_files"))
        try:
            ds = datasets.load_dataset(builder, data_files=files, split=hf_split, cache_dir=cache, **kwargs)
        except Exception as err:  # missing file, bad JSON/CSV/parquet: datasets raises many types
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(f"{where}: cannot load with datasets ({msg})") from err
    else:
        where = f"nyu-mll/glue/{task.hf_config}/{hf_split}"
        try:
            ds = datasets.load_dataset("nyu-mll/glue", task.hf_config, split=hf_split, cache_dir=cache)
        except Exception as err:  # network, hub and cache errors come in many types
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(
                f"{where}: cannot load from Hugging Face ({msg}; check the network or use --data-dir)"
            ) from err

    columns = [task.hf_text_a] + ([task.hf_text_b] if task.hf_text_b else [])
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(missing)} (found {', '.join(ds.column_names)}; expected "
            f"the nyu-mll/glue {task.hf_config} columns {', '.join(columns)}, label)"
        )
    has_label = "label" in ds.column_names
    names: list[str] | None = None
    if has_label:
        feature = ds.features["label"]
        names = list(getattr(feature, "names", None) or []) or None

    text_a = ds[task.hf_text_a]
    text_b = ds[task.hf_text_b] if task.hf_text_b else None
    labels = ds["label"] if has_label else [None] * len(text_a)
    examples = []
    # Rows are counted from 1, as lines in the file loader's messages.
    for i, (a, lab) in enumerate(zip(text_a, labels, strict=True)):
        b = text_b[i] if text_b is not None else None
        examples.append(
            Example(
                str(a).strip(),
                None if b is None else str(b).strip(),
                _hf_label(task, lab, names, where, i + 1, stem.startswith("test")),
            )
        )
    return examples
