"""backupd's jobs against real sources and a real repository, in one process.

A servicehost's table (its data directories, no database started) and a
controller's table (a SQLite state database) are served on real sockets;
backupd pulls from them into a real restic repository. The faults the issue
names: bytes flipped in the repository fail the drill, and say so as a
platform event; an unreachable offsite location is retried, recorded on
the backup and reported, never skipped; retention removes what the policy
no longer keeps, from the repository and the catalog alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pwd
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from roost.backups.daemon import Backupd, build
from roost.backups.drill import Drills
from roost.backups.jobs import Jobs, Repos
from roost.backups.layout import Layout
from roost.backups.locations import local_location, parse_location
from roost.backups.metrics import families
from roost.backups.restic import Repo
from roost.backups.retention import Policy, read_policies
from roost.backups.sources import Pullers
from roost.controller import lifecycle
from roost.controller.astore import AsyncStore
from roost.controller.backups import Backups, backupds_of
from roost.controller.core import Controller
from roost.controller.service import ControllerService
from roost.controller.services import ServiceError
from roost.controller.store import Store
from roost.proc.backoff import Backoff
from roost.servicehost.appdata import AppData
from roost.servicehost.binaries import Binaries
from roost.servicehost.daemon import handlers as servicehost_handlers
from roost.servicehost.datasession import DataSessions
from roost.servicehost.host import ServiceHost
from roost.servicehost.layout import Layout as ServicehostLayout
from roost.servicehost.user import ServiceUser
from roost.sessions.server import ExecSessions
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.keys import generate_keypair
from roost.wire.messages import BackupPolicySet, BackupRestore, BackupRestored, Error, Ok
from roost.wire.node import Node
from roost.wire.rpc import RpcServer
from tests.migrated import migrated_sqlite

DAY = 86400.0
T0 = 1_780_000_000.0


@dataclass
class World:
    backupd: Backupd
    jobs: Jobs
    appdata: AppData
    store: AsyncStore
    layout: Layout
    controller: Controller
    sync: Store  # for setting data up

    async def events(self) -> list[tuple[str, str]]:
        return [(e.kind, e.message) for e in await self.store.events(None, 50)]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    # The sources: a servicehost (data directories) and a controller (events).
    me = pwd.getpwuid(os.getuid())
    user = ServiceUser(me.pw_name, me.pw_uid, me.pw_gid, dropped=False)
    bins = Binaries(pg_bin=tmp_path / "pg", redis_server=tmp_path / "redis-server")
    sh_layout = ServicehostLayout(tmp_path / "sh")
    host = ServiceHost(sh_layout, Settings(), bins, user)
    appdata = AppData(sh_layout.root / "appdata")  # where the daemon keeps it
    appdata.create()
    url = migrated_sqlite(tmp_path / "state.db")
    sync = Store(make_engine(url))
    store = AsyncStore(sync)
    core = Controller(store, Settings(), "c1")
    controller = ControllerService(core, builders=None)
    sh_keys, ctl_keys, bk_keys = generate_keypair(), generate_keypair(), generate_keypair()
    sh_node = Node(sh_keys, [bk_keys.public])
    ctl_node = Node(ctl_keys, [bk_keys.public])
    bk_node = Node(bk_keys, [sh_keys.public, ctl_keys.public])
    async with sh_node, ctl_node, bk_node:
        table = servicehost_handlers(host, appdata, DataSessions(appdata, ExecSessions(), user))
        sh_server = RpcServer(sh_node, "tcp://127.0.0.1:*", table)
        ctl_server = RpcServer(ctl_node, "tcp://127.0.0.1:*", controller.handle)
        cluster = ClusterConfig(
            endpoints={
                "servicehost": [Endpoint(sh_server.address, sh_keys.public_text)],
                "controller": [Endpoint(ctl_server.address, ctl_keys.public_text)],
            }
        )
        layout = Layout(tmp_path / "bk")
        layout.create()
        pullers = Pullers(bk_node, cluster)
        repos = Repos(Repo(local_location(layout), layout))
        await repos.local.init()
        backupd = build(layout, Settings(), pullers, repos, Drills(repos.local, layout))
        async with asyncio.TaskGroup() as tg:
            serving = [tg.create_task(sh_server.serve()), tg.create_task(ctl_server.serve())]
            try:
                yield World(backupd, backupd.jobs, appdata, store, layout, core, sync)
            finally:
                await pullers.close()
                for t in serving:
                    t.cancel()
    await store.aclose()


def _write(appdata: AppData, app: str, files: dict[str, bytes]) -> None:
    root = appdata.dir(app)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def _flip_every_pack(layout: Layout) -> int:
    """One byte flipped in the middle of every data pack of the local repository."""
    packs = [p for p in (layout.local_repo / "data").rglob("*") if p.is_file()]
    for p in packs:
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
    return len(packs)


async def test_a_data_backup_is_taken_then_verified_and_measured(world: World) -> None:
    _write(world.appdata, "shop", {"a.txt": b"alpha", "sub/b.bin": bytes(range(256)) * 100})
    entries = await world.jobs.capture("shop", "capture")
    assert [(e.kind, e.state) for e in entries] == [("data", "taken")]
    rec = await world.jobs.followup(entries[0].id)
    assert rec.entry.state == "verified", rec.entry.message
    assert set(rec.facts["manifest"]) == {"a.txt", "sub", "sub/b.bin"}
    assert not list(world.layout.staging.iterdir()) and not list(world.layout.scratch.iterdir())
    metrics = {m.name: m.samples for m in families(world.jobs.catalog.records(), T0 * 2)}
    age = metrics["roost_backup_verified_age_seconds"][0]
    assert age.labels == {"app": "shop", "kind": "data"} and age.value > 0
    assert metrics["roost_backup_last_failed"][0].value == 0.0


async def test_flipped_bytes_in_the_repository_fail_the_drill_and_are_reported(
    world: World,
) -> None:
    _write(world.appdata, "shop", {"a.txt": b"alpha" * 1000})
    (entry,) = await world.jobs.capture("shop", "capture")
    assert _flip_every_pack(world.layout) > 0
    rec = await world.jobs.followup(entry.id)
    assert rec.entry.state == "failed" and rec.entry.message.startswith("drill:")
    events = await world.events()
    assert any(k == "backup-failed" and entry.id in m for k, m in events), events
    metrics = {m.name: m.samples for m in families(world.jobs.catalog.records(), T0 * 2)}
    assert metrics["roost_backup_last_failed"][0].value == 1.0
    assert metrics["roost_backup_verified_age_seconds"][0].value == float("inf")


async def test_an_unreachable_offsite_location_is_retried_recorded_and_reported(
    world: World,
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loc = parse_location("offsite", f"sftp://backup@127.0.0.1:{port}//srv/r", setting="T")
    world.jobs.repos.offsite = Repo(loc, world.layout)
    world.jobs.copy_backoff = Backoff(base_s=0.01, max_s=0.05)
    world.jobs.settings = dataclasses.replace(world.jobs.settings, backup_copy_tries=3)
    _write(world.appdata, "shop", {"a.txt": b"alpha"})
    (entry,) = await world.jobs.capture("shop", "capture")
    rec = await world.jobs.followup(entry.id)
    offsite = rec.entry.locations["offsite"]
    assert offsite.startswith("error: ") and "unreachable" in offsite, offsite
    assert rec.entry.locations["local"] == "ok"
    assert rec.entry.state == "verified"  # the local copy is proven all the same
    events = await world.events()
    assert any("was not copied offsite" in m for _, m in events), events


async def test_an_offsite_location_that_comes_later_gets_what_it_missed(
    world: World, tmp_path: Path
) -> None:
    """The offsite repository could not be made when backupd started (its
    disk not mounted, or backupd's key not authorised yet): once it can be,
    the next copy makes it, and the backups taken meanwhile are copied too."""
    parent = tmp_path / "offsite-disk"
    parent.write_text("not a directory")  # restic cannot make the repository under it
    loc = parse_location("offsite", str(parent / "repo"), setting="T")
    offsite = Repo(loc, world.layout)
    world.jobs.repos.offsite = offsite
    world.jobs.repos.offsite_problem = "not there yet"  # as open_repos records it
    world.jobs.settings = dataclasses.replace(world.jobs.settings, backup_copy_tries=1)
    _write(world.appdata, "shop", {"a.txt": b"alpha"})
    (early,) = await world.jobs.capture("shop", "capture")
    rec = await world.jobs.followup(early.id)
    assert rec.entry.locations["offsite"].startswith("error: "), rec.entry.locations
    assert rec.entry.state == "verified"

    parent.unlink()  # the location is there now
    parent.mkdir()
    _write(world.appdata, "shop", {"a.txt": b"beta"})
    (late,) = await world.jobs.capture("shop", "capture")
    rec = await world.jobs.followup(late.id)
    assert rec.entry.locations["offsite"] == "ok", rec.entry.locations
    assert world.jobs.repos.offsite_problem == ""
    # The one it missed was queued, and goes when its turn comes.
    assert world.jobs.followups.get_nowait() == early.id
    again = await world.jobs.followup(early.id)
    assert again.entry.locations["offsite"] == "ok", again.entry.locations
    there = {s.id for s in await offsite.snapshots()}
    assert {again.snapshots["offsite"], rec.snapshots["offsite"]} <= there


async def test_retention_removes_what_the_policy_no_longer_keeps(world: World) -> None:
    clock = Clock(T0)
    world.jobs.clock = clock
    world.jobs.policies = {"shop": Policy(pitr_days=1, daily=2, weekly=0, monthly=0)}
    ids = []
    for day in range(5):  # one backup a day, each with other contents
        clock.now = T0 + day * DAY
        _write(world.appdata, "shop", {"a.txt": f"day {day}".encode()})
        (entry,) = await world.jobs.capture("shop", "scheduled")
        ids.append(entry.id)
    gone = await world.jobs.retention()
    # within a day of the newest: the newest; the last two days: days 3 and 4
    assert sorted(gone) == sorted(ids[:3])
    assert [r.id for r in world.jobs.catalog.records()] == ids[3:]
    snapshots = await world.jobs.repos.local.snapshots(["app=shop"])
    assert sorted(s.tag("id") or "" for s in snapshots) == sorted(ids[3:])


async def test_what_cannot_be_restored_is_refused_and_nothing_changes(world: World) -> None:
    _write(world.appdata, "shop", {"a.txt": b"alpha"})
    (entry,) = await world.jobs.capture("shop", "capture")
    table = world.backupd.handlers()
    before = [r.id for r in world.jobs.catalog.records()]
    asks = {
        BackupRestore(app="shop"): "exactly one of a backup id and a time",
        BackupRestore(app="shop", backup_id=entry.id, at="2026-01-01T00:00:00Z"): "exactly one",
        BackupRestore(app="other", backup_id=entry.id): "is not a backup of other's data",
        BackupRestore(app="shop", backup_id="../x"): "is not a backup id",
        BackupRestore(app="shop", backup_id=entry.id, to="copy"): "--to restores a database",
        BackupRestore(app="shop", at="2026-01-01T00:00:00.5Z"): "to the second",
        BackupRestore(app="shop", at="2026-01-01T00:00:00Z"): "no point-in-time recovery",
    }
    for msg, why in asks.items():
        reply = await table(msg)
        assert isinstance(reply, Error) and why in reply.message, (msg, reply)
    assert [r.id for r in world.jobs.catalog.records()] == before  # not even a safety backup


async def test_a_policy_is_kept_and_a_bad_one_refused(world: World) -> None:
    table = world.backupd.handlers()
    assert isinstance(await table(BackupPolicySet(app="shop", daily=3, weekly=1)), Ok)
    assert read_policies(world.layout.policy_file) == {
        "shop": Policy(pitr_days=7, daily=3, weekly=1, monthly=12)
    }
    reply = await table(BackupPolicySet(app="shop", daily=-1))
    assert isinstance(reply, Error) and "daily must be between" in reply.message
    assert world.jobs.policies["shop"].daily == 3


async def test_a_change_is_refused_when_its_backup_fails(world: World) -> None:
    """The controller's rule: with a backupd configured, a change that drops
    data (here an app's deletion) waits for its backup, and is refused, the
    app kept, when that backup fails (a repository gone)."""
    keys = generate_keypair()
    server_node = Node(keys, [keys.public])  # the controller's key is backupd's own here
    async with server_node:
        server = RpcServer(server_node, "tcp://127.0.0.1:*", world.backupd.handlers())
        client_node = Node(keys, [keys.public])
        async with client_node, asyncio.TaskGroup() as tg:
            serving = tg.create_task(server.serve())
            backupds = backupds_of(client_node, [Endpoint(server.address, keys.public_text)])
            world.controller.backups = Backups(backupds)
            (client,) = [b.client for b in backupds]
            app = world.sync.create_app("shop", world.sync.create_account("o@example.com"))
            _write(world.appdata, "shop", {"a.txt": b"alpha"})
            shutil.rmtree(world.layout.local_repo)
            try:
                with pytest.raises(ServiceError, match="refusing to go on without a backup"):
                    await lifecycle.delete_app(world.controller, app)
                assert (await world.store.app("shop")).id == app.id  # kept
                (failed,) = [r.entry for r in world.jobs.catalog.records()]
                assert failed.state == "failed" and failed.reason == "app deletion"
            finally:
                await client.close()
                serving.cancel()


async def test_a_data_directory_comes_back_by_id_and_what_it_replaced_is_kept(
    world: World,
) -> None:
    _write(world.appdata, "shop", {"a.txt": b"before", "sub/b.txt": b"kept"})
    (entry,) = await world.jobs.capture("shop", "capture")
    assert (await world.jobs.followup(entry.id)).entry.state == "verified"
    _write(world.appdata, "shop", {"a.txt": b"after", "new.txt": b"x"})
    reply = await world.backupd.handlers()(BackupRestore(app="shop", backup_id=entry.id))
    assert isinstance(reply, BackupRestored), reply
    assert reply.message == f"shop's data directory restored from {entry.id}"
    root = world.appdata.dir("shop")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "a.txt", "sub", "sub/b.txt",
    ]  # fmt: skip
    assert (root / "a.txt").read_bytes() == b"before"
    safety = world.jobs.catalog.get(reply.safety_backup)
    assert safety.entry.reason == "before restore" and "new.txt" in safety.facts["manifest"]
