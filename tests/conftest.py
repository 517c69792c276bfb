"""Shared fixtures. Paths to ../shared come from environment variables with a repo-relative default.

Tests that need ../shared skip where it is absent, except under CI=true, where a missing path fails the run
so that no test passes by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"


def _shared_path(env_var: str, default: Path) -> Path:
    path = Path(os.environ.get(env_var, default))
    if not path.exists():
        message = f"{path} not found (set {env_var})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and {message}: tests needing shared data must not skip in CI")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The GLUE data directory (GLUE_DIR, default ../shared/data/glue)."""
    return _shared_path("GLUE_DIR", SHARED / "data" / "glue")


@pytest.fixture(scope="session")
def wikitext_dir() -> Path:
    """The WikiText-2 directory (WIKITEXT_DIR, default ../shared/data/wikitext-2)."""
    return _shared_path("WIKITEXT_DIR", SHARED / "data" / "wikitext-2")
