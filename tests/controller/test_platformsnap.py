"""PlatformSnapshotRequest and BackupEvent, through the controller's own
table: a copy of the state database (SQLite and PostgreSQL) that opens and
holds what was written, the files a fresh controller needs, the schema's
revision; a backup's failure recorded as a platform event."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from alembic.script import ScriptDirectory

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.platformsnap import PlatformFiles
from roost.controller.secretbox import FERNET_FILE, ensure_key_file
from roost.controller.service import ControllerService
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import alembic_config, make_engine, migrate, sqlite_url
from roost.wire.messages import BackupEvent, Error, Ok, PlatformSnapshot, PlatformSnapshotRequest
from tests.migrated import migrated_sqlite
from tests.pgserver import pg_bin, postgres_server
from tests.releases import digest as _d
from tests.releases import go_live


def _head(url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head
    return head


def _data_dir(tmp: Path) -> Path:
    keys = tmp / "keys"
    keys.mkdir()
    ensure_key_file(keys / FERNET_FILE, None)
    (keys / "peers.json").write_text('{"peers": {}}')
    (tmp / "cluster.json").write_text('{"name": "t"}')
    return tmp


def _service(url: str, data: Path | None) -> tuple[ControllerService, Store]:
    store = Store(make_engine(url))
    files = PlatformFiles(data, url) if data is not None else None
    return ControllerService(
        Controller(AsyncStore(store), Settings(), "c1"), None, None, files
    ), store


@pytest.fixture
def sqlite_setup(tmp_path: Path) -> Iterator[tuple[ControllerService, Store, Path]]:
    data = _data_dir(tmp_path)
    url = migrated_sqlite(data / "state.db")
    service, store = _service(url, data)
    yield service, store, data
    service.c.store.close()


async def test_a_sqlite_state_database_is_copied_whole_with_its_keys(
    sqlite_setup: tuple[ControllerService, Store, Path],
) -> None:
    service, store, data = sqlite_setup
    owner = store.create_account_hashed("a@example.com", "x")
    app = store.create_app("shop", owner)
    store.create_app("blog", owner)
    spec = AppSpec(processes={"web": ProcessSpec(name="web", kind="command", command="x")})
    for v, image in enumerate(("1", "2"), 1):  # v1 served, v2 rolling out
        store.create_build(f"b{v}", app.id)
        store.create_release(app.id, f"b{v}", _d(image), _d("e") if v == 1 else "", spec, "", "v")
        if v == 1:
            go_live(store, app.id, 1)
    snap = await service.handle(PlatformSnapshotRequest())
    assert isinstance(snap, PlatformSnapshot)
    # What a restore needs, said by the controller: backupd reads no table.
    assert snap.app_keys == {a.name: a.key for a in store.apps()}
    assert set(snap.app_keys) == {"shop", "blog"}
    assert snap.images == sorted([_d("1"), _d("e"), _d("2")])
    assert snap.schema_version == _head(sqlite_url(data / "state.db"))
    assert set(snap.files) == {"state.sqlite", "keys/fernet.key", "cluster.json", "keys/peers.json"}
    assert snap.files["keys/fernet.key"] == (data / "keys" / FERNET_FILE).read_bytes()
    copy = data / "restored.db"
    copy.write_bytes(snap.files["state.sqlite"])
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT name FROM apps ORDER BY id").fetchall() == [
            ("shop",),
            ("blog",),
        ]


async def test_a_postgresql_state_database_is_dumped(tmp_path: Path) -> None:
    data = _data_dir(tmp_path)
    with postgres_server() as url:
        migrate(url)
        service, store = _service(url, data)
        try:
            owner = store.create_account_hashed("a@example.com", "x")
            store.create_app("shop", owner)
            snap = await service.handle(PlatformSnapshotRequest())
        finally:
            service.c.store.close()
        assert isinstance(snap, PlatformSnapshot) and snap.schema_version == _head(url)
        assert snap.app_keys is not None and set(snap.app_keys) == {"shop"}
        assert snap.images == []
        dump = tmp_path / "state.pgdump"
        dump.write_bytes(snap.files["state.pgdump"])
        engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("CREATE DATABASE restored"))
        engine.dispose()
        u = sqlalchemy.make_url(url)
        subprocess.run(
            [pg_bin("pg_restore"), "--no-owner", "-h", str(u.host), "-p", str(u.port),
             "-U", str(u.username), "-d", "restored", str(dump)],
            check=True, capture_output=True,
        )  # fmt: skip
        restored = sqlalchemy.create_engine(u.set(database="restored"))
        with restored.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT name FROM apps")).fetchall() == [("shop",)]
        restored.dispose()


async def test_without_its_data_directory_a_controller_says_so(tmp_path: Path) -> None:
    url = migrated_sqlite(tmp_path / "state.db")
    service, _ = _service(url, None)
    try:
        reply = await service.handle(PlatformSnapshotRequest())
    finally:
        service.c.store.close()
    assert isinstance(reply, Error) and "data directory" in reply.message


async def test_a_backup_event_is_a_platform_event_of_its_app(
    sqlite_setup: tuple[ControllerService, Store, Path],
) -> None:
    service, store, _ = sqlite_setup
    owner = store.create_account_hashed("a@example.com", "x")
    app = store.create_app("shop", owner)
    failed = BackupEvent(app="shop", kind="pgdump", ok=False, message="drill: 3 rows differ")
    assert await service.handle(failed) == Ok()
    assert await service.handle(BackupEvent(app="", kind="platform", ok=True, message="v")) == Ok()
    gone = BackupEvent(app="gone", kind="redis", ok=False, message="unreachable")
    assert await service.handle(gone) == Ok()
    events = [(e.kind, e.app_id, e.message) for e in reversed(store.events())]
    assert events == [
        ("backup-failed", app.id, "shop: pgdump backup FAILED: drill: 3 rows differ"),
        ("backup-ok", None, "platform: platform backup ok: v"),
        ("backup-failed", None, "gone: redis backup FAILED: unreachable"),
    ]
