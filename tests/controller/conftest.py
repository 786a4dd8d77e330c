"""Fixtures shared by the controller's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.controller.store import Store
from roost.state.db import make_engine, migrate
from tests.migrated import migrated_sqlite
from tests.pgserver import postgres_server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """An empty, migrated SQLite state database (test modules may set up their own)."""
    url = migrated_sqlite(tmp_path / "state.db")
    s = Store(make_engine(url))
    yield s
    s.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def either_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated state database of each kind a controller may use: SQLite,
    and a PostgreSQL server of the test's own (races the SQLite lock hides)."""
    if request.param == "sqlite":
        url = migrated_sqlite(tmp_path / "state.db")
        s = Store(make_engine(url))
        yield s
        s.engine.dispose()
        return
    with postgres_server() as url:
        migrate(url)
        s = Store(make_engine(url))
        yield s
        s.engine.dispose()
