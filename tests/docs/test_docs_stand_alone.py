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
        # Names of documents; a benchmarks/results/ file is the output of the benchmark that writes it.
        names |= set(re.findall(r"(?<![\w-])(?<!results/)([a-z_-]+\.md)\b", text))
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


def test_library_modules_do_not_import_the_cli():
    """The CLI sits on the library, never under it: the report, the server and the core import no cli module."""
    for path in (ROOT / "src" / "beexformer").rglob("*.py"):
        if "cli" in path.relative_to(ROOT / "src" / "beexformer").parts:
            continue
        imports = re.findall(r"^\s*(?:from|import) beexformer\.cli\b", path.read_text(encoding="utf-8"), flags=re.M)
        assert not imports, path


def test_one_implementation_of_each_helper():
    """sinusoidal_table, entropy, write_json, sweep_rows and the text layout are each defined once."""
    for name in ("sinusoidal_table", "entropy", "write_json", "sweep_rows", "encode_layout"):
        found = [
            p
            for p in (ROOT / "src" / "beexformer").rglob("*.py")
            if re.search(rf"^def {name}\(", p.read_text(encoding="utf-8"), flags=re.M)
            # the LLM gates' torch entropy over 49k-token vocabularies is its own (parts below the checkout only)
            and "llm" not in p.relative_to(ROOT).parts
        ]
        assert len(found) == 1, (name, found)
