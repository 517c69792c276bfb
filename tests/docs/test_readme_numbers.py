"""Every number in the README's measured tables equals the committed artifact its row cites.

A measured table is one with an "artifact" column. Its cell names the artifact (`benchmarks/results/X.json`)
and then the keys that hold the row's numbers, as dotted paths in which a segment may be a `*` pattern (one
value per task, e.g. `aggregate.main|*|W1A32.flops_saved.mean`); a row may instead cite a test file that
checks its claim in CI. Each number in the second column must equal, at the precision printed, one cited
value, or the mean, min or max of a `*` path, as it is or as a percentage (x100) or in millions (bytes as MB).
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCALES = (1.0, 100.0, 1e-6)


def _cells(line: str) -> list[str]:
    # Split on unescaped pipes only: `\|` stands for a pipe inside a key.
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in parts]


def measured_rows(markdown: str) -> list[tuple[str, str, str]]:
    """(what, numbers cell, artifact cell) of every row of every table that has an "artifact" column."""
    rows, header = [], None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = cells
        elif "artifact" in header and not set(line) <= set("|- "):
            rows.append((cells[0], cells[1], cells[header.index("artifact")]))
    return rows


def resolve(data, path: str) -> list[list[float]]:
    """Values at a dotted path; one list per `*`-free path, or the list of values a pattern matches."""
    nodes = [data]
    wildcard = False
    for key in path.split("."):
        nxt = []
        for node in nodes:
            if isinstance(node, dict):
                if "*" in key:
                    wildcard = True
                    nxt += [v for k, v in node.items() if fnmatch.fnmatchcase(k, key)]
                elif key in node:
                    nxt.append(node[key])
        nodes = nxt
    assert nodes, f"no value at {path}"
    values = [float(v) for v in nodes]
    return [values] if wildcard else [[v] for v in values]


def candidates(artifact_cell: str) -> list[float]:
    spans = re.findall(r"`([^`]+)`", artifact_cell)
    assert spans, f"no artifact cited in {artifact_cell!r}"
    out: list[float] = []
    data = None
    for span in spans:
        if "/" in span:
            path = ROOT / span
            assert path.is_file(), f"{span} is not a committed file"
            data = json.loads(path.read_text()) if path.suffix == ".json" else None
            continue
        assert data is not None, f"key {span} cited before its JSON artifact"
        for group in resolve(data, span):
            out += group if len(group) == 1 else [sum(group) / len(group), min(group), max(group), *group]
    return out


def numbers(cell: str) -> list[str]:
    text = re.sub(r"([A-Za-z])-(\d)", r"\1_\2", cell)  # a name such as SST-2 is no number
    text = re.sub(r"(\d)-(\d)", r"\1 to \2", text)  # a range 20.48-21.23 is two numbers
    text = re.sub(r"(\d)x\b", r"\1 x", text)
    return re.findall(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w.])", text.replace(",", ""))


def matches(printed: str, values: list[float]) -> bool:
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    target = float(printed)
    tolerance = 0.5 * 10**-decimals + 1e-9
    return any(abs(v * scale - target) <= tolerance for v in values for scale in SCALES)


def test_readme_measured_tables_match_their_artifacts():
    rows = measured_rows((ROOT / "README.md").read_text())
    assert len(rows) >= 8
    for what, cell, artifact in rows:
        values = candidates(artifact)
        for printed in numbers(cell):
            assert matches(printed, values), f"README row {what!r}: {printed} is not in {artifact}"


def test_the_check_catches_a_wrong_number():
    assert matches("19.2", [19.2493]) and not matches("19.3", [19.2493])
    assert numbers("3.3-19.2x / 3.1-7.0x") == ["3.3", "19.2", "3.1", "7.0"]
    assert numbers("-1.06 points (-5.6 to +4.1) on SST-2, W1A1") == ["-1.06", "-5.6", "+4.1"]
    data = {"aggregate": {"main|a|W1A32": {"r": {"mean": 1.0}}, "main|b|W1A32": {"r": {"mean": 3.0}}}}
    assert resolve(data, "aggregate.main|*|W1A32.r.mean") == [[1.0, 3.0]]
