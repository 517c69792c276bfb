"""The repository stands alone: every document the code and docs point at is in docs/, every "design.md
section N" exists there, and nothing sends a reader to the ../shared notes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _texts():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "src").rglob("*.py"))]:
        yield path, path.read_text(encoding="utf-8")


def test_referenced_docs_exist():
    names = set()
    for path, text in _texts():
        assert "shared/docs" not in text, path
        names |= set(re.findall(r"\b([a-z_-]+\.md)\b", text))
    committed = {
        p.name for p in [*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md"), *(ROOT / "benchmarks").rglob("*.md")]
    }
    missing = names - committed
    assert not missing
    assert {"design.md", "anchors.md"} <= names


def test_design_sections_cited_by_number_exist():
    design = (ROOT / "docs" / "design.md").read_text()
    headings = set(re.findall(r"^##+ (\d+[a-z]?)\.", design, flags=re.M))
    cited = set()
    for _, text in _texts():
        cited |= set(re.findall(r"design\.md\)?,? (?:section )?(\d+[a-z]?)\b", text))
    assert cited and cited <= headings, cited - headings
