"""Fixtures shared by the controller's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.controller.store import Store
from roost.state.db import make_engine, migrate, sqlite_url


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """An empty, migrated SQLite state database (test modules may set up their own)."""
    url = sqlite_url(tmp_path / "state.db")
    migrate(url)
    s = Store(make_engine(url))
    yield s
    s.engine.dispose()
