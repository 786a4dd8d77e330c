"""A platform upgrade backs the state up before it migrates it
(roost.controller.upgrade): a real SQLite state database left at an older
schema, as a previous Roost left it, is copied (consistently, at that
schema) before the migration; a copy that cannot be made stops the start
when a backupd is configured, and nothing is migrated; every platform
snapshot the controller serves carries the copies."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from alembic import command

from roost.controller.astore import AsyncStore
from roost.controller.platformsnap import PlatformFiles, PlatformSnap
from roost.controller.store import Store
from roost.controller.upgrade import (
    STARTED,
    Started,
    migrate_after_copy,
    pending,
    revisions,
    upgrade_reason,
)
from roost.proc.exits import Unavailable
from roost.state.db import alembic_config, make_engine, sqlite_url
from roost.wire.messages import PlatformSnapshot, PlatformSnapshotRequest

OLD = "0011"


def test_what_makes_an_upgrade() -> None:
    v1 = Started("0.1.0", "0012")
    assert upgrade_reason(None, "0.1.0", "", "0012") == ""  # a new database
    assert upgrade_reason(v1, "0.1.0", "0012", "0012") == ""  # the same start again
    assert upgrade_reason(None, "0.1.0", "0012", "0012") == ""  # nothing known to differ
    assert upgrade_reason(v1, "0.1.0", "0011", "0012") == "the schema goes from 0011 to 0012"
    assert upgrade_reason(None, "0.2.0", "0011", "0012") == "the schema goes from 0011 to 0012"
    assert upgrade_reason(v1, "0.2.0", "0012", "0012") == "Roost goes from 0.1.0 to 0.2.0"


def _old_platform(tmp_path: Path) -> tuple[Path, str]:
    """A data directory whose state database a previous Roost left at OLD, with an app."""
    data = tmp_path / "data"
    data.mkdir()
    url = sqlite_url(data / "state.db")
    command.upgrade(alembic_config(url), OLD)
    with sqlite3.connect(data / "state.db") as db:
        db.execute(
            "INSERT INTO accounts (email, password_hash, is_admin, created_at) "
            "VALUES ('o@example.com', '', 0, 0)"
        )
    return data, url


def _revision(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return str(db.execute("SELECT version_num FROM alembic_version").fetchone()[0])


async def test_the_state_is_copied_before_it_is_migrated(tmp_path: Path) -> None:
    data, url = _old_platform(tmp_path)
    head = revisions(url)[1]
    assert revisions(url) == (OLD, head) and head != OLD

    copy = await migrate_after_copy(data, url, "0.1.0", backupd=True)
    assert copy is not None and copy.parent == data / "controller" / "pre-upgrade"
    assert _revision(copy / "state.sqlite") == OLD  # the state as it was before
    with sqlite3.connect(copy / "state.sqlite") as db:
        assert db.execute("SELECT email FROM accounts").fetchall() == [("o@example.com",)]
    meta = json.loads((copy / "meta.json").read_text())
    assert meta["reason"] == f"the schema goes from {OLD} to {head}" and meta["captured"] == ""
    assert _revision(data / "state.db") == head  # then migrated
    assert json.loads((data / STARTED).read_text()) == {"version": "0.1.0", "revision": head}
    assert pending(data) == [copy]

    # The same Roost again: nothing to copy; a new one: a copy, without a migration.
    assert await migrate_after_copy(data, url, "0.1.0", backupd=True) is None
    again = await migrate_after_copy(data, url, "0.2.0", backupd=True)
    assert again is not None and again != copy
    assert json.loads((again / "meta.json").read_text())["reason"] == (
        "Roost goes from 0.1.0 to 0.2.0"
    )

    # Every platform snapshot this controller serves carries the copies.
    store = AsyncStore(Store(make_engine(url)))
    try:
        snap = PlatformSnap(store, PlatformFiles(data, url))
        reply = await snap.snapshot(PlatformSnapshotRequest())
        assert isinstance(reply, PlatformSnapshot) and snap.served == 1
        rel = f"controller/pre-upgrade/{copy.name}/state.sqlite"
        assert reply.files[rel] == (copy / "state.sqlite").read_bytes()
        assert f"controller/pre-upgrade/{again.name}/meta.json" in reply.files
    finally:
        await store.aclose()


async def test_no_migration_runs_when_its_copy_cannot_be_made(tmp_path: Path) -> None:
    data, url = _old_platform(tmp_path)
    (data / "controller").mkdir()
    (data / "controller" / "pre-upgrade").write_text("not a directory")
    with pytest.raises(Unavailable, match="nothing was migrated"):
        await migrate_after_copy(data, url, "0.1.0", backupd=True)
    assert _revision(data / "state.db") == OLD and not (data / STARTED).exists()

    # Without a backupd the upgrade goes on (with a warning), as other changes do.
    assert await migrate_after_copy(data, url, "0.1.0", backupd=False) is None
    assert _revision(data / "state.db") == revisions(url)[1]
