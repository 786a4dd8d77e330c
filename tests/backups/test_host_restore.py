"""A servicehost's data destroyed, and every app restored onto it afresh.

A real servicehost (`roost servicehost`, real PostgreSQL and Redis), backupd's
real pieces in this process (its table, jobs, drills, a real restic
repository) and a controller's table answering the platform snapshot. An app
with a database, a Redis and files in its data directory is captured and
proven, with the platform; the servicehost stops, its data directory is
deleted, it starts again empty; `BackupHostRestore` brings the app back, and
its unchanged credentials read the same rows and keys, its data directory
holds the same files. A servicehost that holds services is refused, by
backupd and by the servicehost itself, and nothing changes. Each app is
suspended (told to the controller) for its own part, and resumed after it
when it came back whole; one that came back empty stays suspended.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from roost.backups.daemon import Backupd
from roost.backups.drill import manifest
from roost.backups.layout import Layout
from roost.controller.store import Store
from roost.wire.messages import (
    BackupHostRestore,
    BackupHostRestored,
    Error,
    ServiceCredentials,
    ServiceHostRestore,
)
from roost.wire.rpc import RemoteError
from tests.backups.backupdkit import backupd_and_controller, servicehost_and_base
from tests.servicehost.backupkit import as_app, provision, redis_cli
from tests.servicehost.harness import Servicehost

pytestmark = pytest.mark.e2e

FILES = {"report.txt": b"the report\n", "sub/image.bin": bytes(range(256)) * 40}


@dataclass
class World:
    sh: Servicehost
    backupd: Backupd
    layout: Layout
    ctl: Store  # the controller's table

    async def ask(self, msg: BackupHostRestore) -> object:
        return await self.backupd.handlers()(msg)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with servicehost_and_base("roost-hostrestore-") as (sh, base):
        assert sh.backupd_keys is not None
        async with backupd_and_controller(base, sh.backupd_keys, [sh.endpoint]) as (backupd, ctl):
            yield World(sh, backupd, backupd.layout, ctl)


def rows(pg: ServiceCredentials) -> list[str]:
    with as_app(pg) as conn:
        return [r[0] for r in conn.execute("SELECT body FROM notes ORDER BY id")]


def redis_get(r: ServiceCredentials, key: str) -> str:
    out = redis_cli(r.host, r.port, "default", r.password, "GET", key)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def appdata(sh: Servicehost, app: str) -> Path:
    return sh.data / "servicehost" / "appdata" / app


async def captured(world: World, app: str) -> list[str]:
    """Everything of `app`, then the platform: taken, then verified by their drills."""
    jobs = world.backupd.jobs
    entries = await jobs.capture(app, "capture")
    entries.append((await jobs.backup("platform", "", "capture")).entry)
    ids = [e.id for e in entries]
    for backup_id in ids:
        rec = await jobs.followup(backup_id)
        assert rec.entry.state == "verified", rec.entry
    return ids


async def test_every_app_comes_back_onto_a_fresh_servicehost(world: World) -> None:
    sh = world.sh
    pg = await provision(sh, "shop", "postgres")
    red = await provision(sh, "shop", "redis")
    blog = await provision(sh, "blog", "postgres")  # never backed up
    owner = world.ctl.create_account_hashed("a@example.com", "x")
    shop_id, blog_id = (world.ctl.create_app(a, owner).id for a in ("shop", "blog"))
    with as_app(pg) as conn:
        conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes (body) VALUES ('first'), ('second')")
    assert redis_cli(red.host, red.port, "default", red.password, "SET", "greeting", "hello")
    for rel, data in FILES.items():
        (appdata(sh, "shop") / rel).parent.mkdir(parents=True, exist_ok=True)
        (appdata(sh, "shop") / rel).write_bytes(data)
    files = manifest(appdata(sh, "shop"))
    ids = await captured(world, "shop")
    assert sorted(i.split("-")[0] for i in ids) == ["data", "pgdump", "platform", "redis"]

    # A servicehost holding services is refused, by backupd and by itself.
    state = (sh.data / "servicehost" / "state.json").read_bytes()
    reply = await world.ask(BackupHostRestore(host="servicehost"))
    assert isinstance(reply, Error) and "holds services already (of blog, shop)" in reply.message
    with pytest.raises(RemoteError, match="holds services already"):
        await sh.as_backupd(ServiceHostRestore(state_json=state, restore_id="x1"))
    assert (sh.data / "servicehost" / "state.json").read_bytes() == state
    assert rows(pg) == ["first", "second"]
    reply = await world.ask(BackupHostRestore(host="nope"))
    assert isinstance(reply, Error) and "no servicehost 'nope' answers" in reply.message

    # The disk is lost: the servicehost comes back empty.
    sh.stop()
    shutil.rmtree(sh.data / "servicehost")
    sh.start()
    await sh.wait_postgres_up()
    with pytest.raises(psycopg.OperationalError):
        rows(pg)
    assert not appdata(sh, "shop").exists()

    reply = await world.ask(BackupHostRestore(host="servicehost"))
    assert isinstance(reply, BackupHostRestored), reply
    platform = next(i for i in ids if i.startswith("platform"))
    assert reply.platform_backup == platform
    got = {(r.app, r.kind): r for r in reply.reports}
    assert [(r.app, r.kind) for r in reply.reports] == [
        ("blog", "pgdump"),
        ("shop", "pgdump"),
        ("shop", "redis"),
        ("shop", "data"),
    ]
    for kind in ("pgdump", "redis", "data"):
        r = got[("shop", kind)]
        assert r.ok and r.backup_id in ids and r.backup_id.startswith(kind), r
    assert not got[("blog", "pgdump")].ok
    assert "no verified backup of its database" in got[("blog", "pgdump")].message

    # Each app was in maintenance for its own part (told to the controller):
    # shop serves again; blog, back empty, stays suspended for an operator.
    assert not world.ctl.app("shop").suspended and world.ctl.app("blog").suspended
    told = ("suspend", "resume", "backup-restored", "backup-restore-failed")
    said = [(e.kind, e.app_id) for e in reversed(world.ctl.events()) if e.kind in told]
    assert said == [
        ("suspend", blog_id),
        ("backup-restore-failed", blog_id),
        ("suspend", shop_id),
        ("resume", shop_id),
        ("backup-restored", shop_id),
    ]

    # The credentials the controller holds, unchanged, read the same data.
    assert rows(pg) == ["first", "second"]
    assert redis_get(red, "greeting") == "hello"
    assert manifest(appdata(sh, "shop")) == files
    with as_app(blog) as conn:  # its role and (empty) database are back
        assert conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone() == (0,)
    with as_app(pg) as conn:  # the app's own again: it writes
        conn.execute("INSERT INTO notes (body) VALUES ('third')")

    # Done once: now it holds services, and a second restore is refused.
    reply = await world.ask(BackupHostRestore(host="servicehost"))
    assert isinstance(reply, Error) and "holds services already" in reply.message
    assert rows(pg) == ["first", "second", "third"]
