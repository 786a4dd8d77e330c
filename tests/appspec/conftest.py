"""Fixtures for the appspec tests: the epio.ini corpus and throwaway app directories."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# shared/ sits beside the repository checkout (../shared/epio-corpus), wherever
# the repository is cloned; ROOST_EPIO_CORPUS overrides for unusual layouts.
CORPUS = Path(
    os.environ.get("ROOST_EPIO_CORPUS", REPO_ROOT.parent / "shared" / "epio-corpus")
).resolve()


def corpus_files() -> list[Path]:
    """Every epio.ini in the corpus. Missing corpus is a failure, never a skip."""
    files = CORPUS / "files"
    if not files.is_dir():
        raise RuntimeError(
            f"the epio.ini corpus is missing: expected {files} "
            "(../shared/epio-corpus beside the repository, or set ROOST_EPIO_CORPUS)"
        )
    return sorted(files.iterdir())


MakeApp = Callable[..., Path]


@pytest.fixture
def make_app(tmp_path: Path) -> MakeApp:
    """make_app({"epio.ini": "...", "app.py": "..."}) -> an app directory."""

    def make(files: dict[str, str | bytes], executable: tuple[str, ...] = ()) -> Path:
        root = tmp_path / "app"
        root.mkdir(exist_ok=True)
        for name, content in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
            if name in executable:
                path.chmod(0o755)
        return root

    return make
