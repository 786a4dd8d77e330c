"""Fixtures for the appspec tests: throwaway app directories; whether the corpus is collected."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from .epio_files import CORPUS, corpus_present

# Without the epio.ini corpus beside the checkout (a clone on its own), the
# corpus-wide tests are not collected: the quirks they found are covered by
# fixtures/epio. CI must run them: there a missing corpus fails collection.
_IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
collect_ignore = [] if corpus_present() or _IN_CI else ["test_corpus.py"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if collect_ignore:
        terminalreporter.write_line(
            f"note: no epio.ini corpus at {CORPUS}: tests/appspec/test_corpus.py "
            "was not collected (with CI=true that is a failure)"
        )


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
