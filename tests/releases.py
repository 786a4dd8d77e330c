"""Test set-up: a release made live the way the controller ends a rollout;
a controller on a fresh SQLite state database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.deployflow import Event, ReleaseState, release_move
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import make_engine
from tests.migrated import migrated_sqlite


def go_live(store: Store, app_id: int, version: int) -> None:
    """Pending release `version` came up: it serves, the one before steps aside."""
    assert store.end_rollout(app_id, version, release_move(ReleaseState.PENDING, Event.UP))


def digest(c: str) -> str:
    """A well-formed digest: the hex character `c` 64 times."""
    return "sha256:" + c * 64


@contextmanager
def sqlite_controller(directory: Path) -> Iterator[tuple[Controller, Store]]:
    """A controller (not holding the lease) and its store, on state.db in `directory`."""
    url = migrated_sqlite(directory / "state.db")
    store = Store(make_engine(url))
    c = Controller(AsyncStore(store), Settings(), "t")
    try:
        yield c, store
    finally:
        c.store.close()
        store.engine.dispose()
