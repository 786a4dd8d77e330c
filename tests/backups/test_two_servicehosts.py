"""Two servicehosts, each holding its own apps: backupd names each by its id
(issue 16's follow-up to issue 15).

Two real servicehost daemons (real PostgreSQL), both with the key name
'servicehost' as `roost cluster init` makes them, each with its own host id
(svc-a, svc-b), and backupd's real pieces in this process with a real restic
repository and a controller's table answering the platform snapshot. Before,
backupd named both 'servicehost': the catalog could not tell whose data a
backup was, the platform backup kept one state.json of the two, and a host
restore could address neither. Here each app's backups come from its holder
and are recorded under its id, and a host restore of one servicehost brings
back its apps only, leaving the other's untouched.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import psycopg
import pytest

from roost.backups.daemon import Backupd
from roost.backups.hostrestore import state_file
from roost.controller.store import Store
from roost.wire.identity import identity, load_peers, save_peers
from roost.wire.messages import BackupHostRestore, BackupHostRestored, Error, ServiceCredentials
from tests.backups.backupdkit import backupd_and_controller, servicehosts_and_base
from tests.servicehost.backupkit import as_app, provision
from tests.servicehost.harness import Servicehost

pytestmark = pytest.mark.e2e


@dataclass
class World:
    hosts: dict[str, Servicehost]
    backupd: Backupd
    ctl: Store


@pytest.fixture
async def world() -> AsyncIterator[World]:
    hosts = {h: Servicehost(backupd=True, host=h) for h in ("svc-a", "svc-b")}
    a, b = hosts["svc-a"], hosts["svc-b"]
    assert a.backupd_keys is not None
    # One backupd pulls from both: svc-b admits svc-a's backupd key too.
    save_peers(b.keys, {**load_peers(b.keys), a.backupd_keys.public: identity("backupd", "svc-a")})
    async with (
        servicehosts_and_base("roost-twohosts-", a, b) as base,
        backupd_and_controller(base, a.backupd_keys, [a.endpoint, b.endpoint]) as (backupd, ctl),
    ):
        yield World(hosts, backupd, ctl)


def appdata(sh: Servicehost, app: str) -> Path:
    return sh.data / "servicehost" / "appdata" / app


def rows(pg: ServiceCredentials) -> list[str]:
    with as_app(pg) as conn:
        return [r[0] for r in conn.execute("SELECT body FROM notes ORDER BY id")]


async def test_each_apps_backups_come_from_its_holder_and_a_host_restore_touches_only_its_apps(
    world: World,
) -> None:
    a, b = world.hosts["svc-a"], world.hosts["svc-b"]
    owner = world.ctl.create_account_hashed("a@example.com", "x")
    creds: dict[str, ServiceCredentials] = {}
    for app, sh in (("one", a), ("two", b)):
        world.ctl.create_app(app, owner)
        creds[app] = pg = await provision(sh, app, "postgres")
        with as_app(pg) as conn:
            conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
            conn.execute("INSERT INTO notes (body) VALUES (%s)", (f"{app} on {sh.host}",))
        appdata(sh, app).mkdir(parents=True, exist_ok=True)
        (appdata(sh, app) / "file.txt").write_text(f"{app}'s file\n")

    jobs = world.backupd.jobs
    taken = [*await jobs.capture("one", "capture"), *await jobs.capture("two", "capture")]
    taken.append((await jobs.backup("platform", "", "capture")).entry)
    for e in taken:
        assert (await jobs.followup(e.id)).entry.state == "verified", e
    # Each app's backups were pulled from its holder, and say so.
    got = {(r.entry.app, r.entry.kind): r.source for r in jobs.catalog.records()}
    assert got == {
        ("one", "pgdump"): "svc-a",
        ("one", "data"): "svc-a",
        ("two", "pgdump"): "svc-b",
        ("two", "data"): "svc-b",
        ("", "platform"): "controller",
    }
    # What an older backupd kept under the key name both answer by goes to
    # the app's holder (as the sources loop does after each refresh).
    for r in jobs.catalog.records():
        if r.entry.kind == "data":
            jobs.catalog.put(msgspec.structs.replace(r, source="servicehost"))
    world.backupd.rename_sources()
    assert {(r.entry.app, r.entry.kind): r.source for r in jobs.catalog.records()} == got
    # The platform backup keeps each servicehost's state, under its id.
    platform = next(r for r in jobs.catalog.records() if r.entry.kind == "platform")
    assert {state_file("svc-a"), state_file("svc-b")} <= platform.facts["files"].keys()

    # svc-a's disk is lost: it comes back empty.
    a.stop()
    shutil.rmtree(a.data / "servicehost")
    a.start()
    await a.wait_postgres_up()
    with pytest.raises(psycopg.OperationalError):
        rows(creds["one"])

    # The key's name both answer by names neither.
    reply = await world.backupd.handlers()(BackupHostRestore(host="servicehost"))
    assert isinstance(reply, Error), reply
    assert "no servicehost 'servicehost' answers (those that do: svc-a, svc-b)" in reply.message

    reply = await world.backupd.handlers()(BackupHostRestore(host="svc-a"))
    assert isinstance(reply, BackupHostRestored), reply
    assert reply.host == "svc-a" and reply.platform_backup == platform.id
    assert [(r.app, r.kind, r.ok) for r in reply.reports] == [
        ("one", "pgdump", True),
        ("one", "data", True),
    ]
    assert rows(creds["one"]) == ["one on svc-a"]
    assert (appdata(a, "one") / "file.txt").read_text() == "one's file\n"
    # svc-b and its app were not touched; nothing of it went onto svc-a.
    assert rows(creds["two"]) == ["two on svc-b"]
    assert not appdata(a, "two").exists()
    assert not world.ctl.app("two").suspended
    told = [e.kind for e in world.ctl.events() if e.app_id == world.ctl.app("two").id]
    assert not {"suspend", "backup-restored", "backup-restore-failed"} & set(told)
