"""Issue 16 with backups: an app's database on a servicehost pair is backed
up across a failover and recovered to a point after it.

The pair (tests/cluster/pgpair.py): real etcd, Patroni and PostgreSQL on
two namespace hosts, the app writing through the runner's data proxy.
backupd's side runs in the test's process, as the daemon wires it
(OwnSlotBarman, Clusters) over a stand-in for the servicehosts' answers;
the pair's source is what a paired servicehost answers backupd
(backupsource.pair_source, over a stand-in for the servicehost: the backup
role made on the primary, backupd's slot declared permanent in the pair's
Patroni).

A base backup and the WAL stream from the primary; the primary's host is
killed under the app's writes; the standby takes over and the writes go
on; the receiver, started again, streams from the new primary through the
slot Patroni made there, with no gap; the archive holds the new timeline's
history file; a recovery to a time after the failover holds every row the
app saw acknowledged before it, and none written after it; restored in
place, the app reads exactly those rows.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from roost import patroni
from roost.backups import pgfacts
from roost.backups.clusters import Clusters
from roost.backups.layout import Layout
from roost.backups.pgfacts import PG_BIN, take_facts
from roost.backups.restore import pg_restore
from roost.backups.slots import OwnSlotBarman
from roost.backups.sources import Where, pair_key
from roost.servicehost import pairbackup
from roost.servicehost.backupsource import pair_source
from roost.servicehost.binaries import Binaries
from roost.servicehost.names import BACKUP_ROLE
from roost.servicehost.pairdb import PairAdmin
from roost.servicehost.pgpair import PairPlan
from roost.servicehost.restores import Restores
from roost.servicehost.state import HostState, Service
from roost.wire.messages import BackupEvent, PgSource, ServiceRestoreReady, ServiceRestoreStep
from tests.cluster.cluster import wait_for
from tests.cluster.harness import Network
from tests.cluster.pgpair import APP, APP_PASSWORD, PACE_S, AppWriter, PairKit
from tests.conftest import processes_under
from tests.tmpfs import tmpfs_dir

pytestmark = pytest.mark.cluster


@dataclass
class PairOnly:
    """The servicehosts' answers, as Pullers keeps them: one pair's PostgreSQL."""

    source: PgSource
    events: list[BackupEvent] = field(default_factory=list)

    @property
    def key(self) -> str:
        return pair_key(self.source)

    def clusters(self) -> dict[str, tuple[Any, PgSource]]:
        return {self.key: (None, self.source)}

    def names(self) -> dict[str, list[str]]:
        return {}

    def where(self, app: str) -> Where | None:
        if app not in self.source.databases:
            return None
        return Where("sh1", None, self.source, self.source.databases[app], cluster=self.key)  # type: ignore[arg-type]

    async def report(self, event: BackupEvent) -> None:
        self.events.append(event)


@dataclass
class PairHost:
    """What servicehost/restores.py asks of a paired servicehost."""

    pg_pair: PairPlan
    root: Path
    state: HostState = field(default_factory=HostState)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        svc = Service(app=APP, kind="postgres", port=self.pg_pair.pg_port, database=APP,
                      username=APP, password=APP_PASSWORD)  # fmt: skip
        self.state.services[HostState.key(APP, "postgres")] = svc

    @property
    def layout(self) -> SimpleNamespace:
        return SimpleNamespace(root=self.root)

    def lock(self, app: str, kind: str) -> asyncio.Lock:
        return self.locks.setdefault(f"{kind}/{app}", asyncio.Lock())

    async def apps_pg(self) -> PairAdmin:
        return PairAdmin(self.pg_pair, self.bins)

    bins = Binaries(PG_BIN, Path("/usr/bin/redis-server"))
    settings = SimpleNamespace(pg_slot_wal_keep_mb=1024)

    def save(self) -> None:
        pass

    def check_disk(self) -> None:
        pass


def restore_step(step: str) -> ServiceRestoreStep:
    return ServiceRestoreStep(app=APP, restore_id="pairtest", step=step)  # type: ignore[arg-type]


@pytest.fixture
def layout() -> Iterator[Layout]:
    with tmpfs_dir("roost-pb-") as disk:
        lay = Layout(Path(tempfile.mkdtemp(prefix="bk-", dir=disk)))
        lay.create()
        yield lay
        shutil.rmtree(lay.data_dir, ignore_errors=True)


def _slot_active(kit: PairKit, member: Any, slot: str) -> bool:
    """Whether backupd's slot on `member` has a receiver streaming through it."""
    admin = (
        f"postgresql://{patroni.SUPERUSER}:{kit.plan.superuser_password}"
        f"@{member.ip}:{kit.plan.pg_port}/postgres"
    )
    try:
        with psycopg.connect(admin, connect_timeout=2) as c:
            row = c.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
    except psycopg.Error:
        return False
    return bool(row and row[0])


def _slots(kit: PairKit, member: Any) -> list[tuple[Any, ...]]:
    admin = (
        f"postgresql://{patroni.SUPERUSER}:{kit.plan.superuser_password}"
        f"@{member.ip}:{kit.plan.pg_port}/postgres"
    )
    with psycopg.connect(admin, connect_timeout=2) as c:
        return c.execute(
            "SELECT slot_name, active, restart_lsn, wal_status FROM pg_replication_slots"
        ).fetchall()


def _ids_in(dump: Path) -> dict[int, float]:
    """The rows of table t in a pg_dump -Fc file: id -> its `at`."""
    out = subprocess.run(
        [str(PG_BIN / "pg_restore"), "--data-only", "--table=t", "-f", "-", str(dump)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    rows, inside = {}, False
    for line in out.splitlines():
        if line.startswith("COPY public.t "):
            inside = True
        elif inside and line == "\\.":
            inside = False
        elif inside:
            i, at = line.split("\t")
            rows[int(i)] = float(at)
    return rows


def test_a_pair_database_is_recovered_to_a_point_after_a_failover(
    network: Network, layout: Layout
) -> None:
    kit = PairKit(network)
    kit.start()
    plan = kit.plan
    source = PgSource(
        host=",".join(h.ip for h in kit.sh),
        port=plan.pg_port,
        user=BACKUP_ROLE,
        password=pairbackup.backup_password(plan),
        databases={APP: APP},
        pair=plan.name,
        rest_port=plan.rest_port,
    )
    pullers = PairOnly(source)
    writer = AppWriter(kit.app_url(), pause_s=PACE_S)
    thread = threading.Thread(target=writer.run)

    async def drill() -> None:
        async with OwnSlotBarman(layout, backupd="backupd1") as barman:
            clusters = Clusters(barman, pullers, dict)  # type: ignore[arg-type]
            [slot] = clusters.pair_slots()
            # What a paired servicehost answers backupd asking with its slot:
            # the backup role made on the primary, the slot declared permanent.
            answered = await pair_source(PairHost(plan, layout.root), plan, [slot])  # type: ignore[arg-type]
            assert answered == source

            # Patroni answers GET /config from its view of etcd, which its
            # watch brings up to date a moment after the PATCH (Patroni 3.0.4
            # answered once without the slot, in a four-worker run).
            def declared() -> bool:
                config = kit.rest(kit.sh[0], "/config")
                return config is not None and slot in config.json().get("slots", {})

            await asyncio.to_thread(wait_for, declared, 30, "the slot in Patroni's configuration")
            thread.start()
            base = await clusters.stage(pullers.key, layout.root, "capture")
            assert base.facts["backup_id"]
            primary = await asyncio.to_thread(wait_for, kit.primary, 30, "the primary")
            await asyncio.to_thread(
                wait_for, lambda: _slot_active(kit, primary, slot), 60, "WAL streaming"
            )
            n = len(writer.acked)
            await asyncio.to_thread(wait_for, lambda: len(writer.acked) >= n + 100, 60, "writes")
            await asyncio.to_thread(wait_for, kit.synchronous, 60, "a synchronous standby")
            print(f"\nkilled the primary {primary.ip}, first listed: {primary is kit.sh[0]}")
            network.partition(primary)
            network.kill_host(primary)
            standby = kit.other(primary)
            try:
                await asyncio.to_thread(
                    wait_for, lambda: kit.primary([standby]), 60, "the standby to take over"
                )
                promoted = time.monotonic()
                await asyncio.to_thread(
                    wait_for, lambda: writer.first_ack_after(promoted), 60, "writes to resume"
                )
                # The receiver, started again, streams from the new primary
                # through the slot Patroni made there.
                await asyncio.to_thread(
                    wait_for,
                    lambda: _slot_active(kit, standby, slot),
                    60,
                    "WAL from the new primary",
                )
            except AssertionError:
                print(kit.logs_tail(), _slots(kit, standby))
                raise
            n = len(writer.acked)
            await asyncio.to_thread(wait_for, lambda: len(writer.acked) >= n + 50, 60, "writes")
            at_mono, at = time.monotonic(), datetime.now(UTC)
            before = {i for i, t in writer.acked if t < at_mono}
            after_failover = {i for i, t in writer.acked if promoted < t < at_mono}
            n = len(writer.acked)
            await asyncio.to_thread(wait_for, lambda: len(writer.acked) >= n + 50, 60, "writes")
            writer.stop()
            thread.join(30)
            await clusters.archive_wal(pullers.key)
            wals = barman.server_dir(pullers.key) / "wals"
            assert (wals / "00000002.history").exists(), sorted(p.name for p in wals.iterdir())
            scratch = layout.scratch / "pitr-test"
            recovered = await clusters.recover(APP, APP, at, scratch)
            rows = _ids_in(recovered.dump)
            lost = before - set(rows)
            assert not lost, f"acknowledged before {at} but not recovered: {sorted(lost)[:20]}"
            assert after_failover and after_failover <= set(rows)
            late = [i for i, t in rows.items() if t > at.timestamp()]
            assert not late, f"rows written after {at} recovered: {late[:20]}"
            # Restored in place, as `roost backups restore --at` does: the
            # servicehost's steps on the pair's primary, backupd's load and
            # facts through the pair's source; the app then reads it.
            host = PairHost(plan, layout.root)
            restores = Restores(host, None)  # type: ignore[arg-type]
            prepared = await restores.pg_step(restore_step("prepare"))
            assert isinstance(prepared, ServiceRestoreReady)
            await pg_restore(source, prepared.database, recovered.dump)
            got = await take_facts(source, prepared.database)
            assert pgfacts.compare(recovered.facts, got) == []
            swapped = await restores.pg_step(restore_step("swap"))
            assert isinstance(swapped, ServiceRestoreReady) and swapped.kept
            assert await asyncio.to_thread(kit.ids) == set(rows)
            print(
                f"\npair backups: {len(before)} rows acknowledged before {at.isoformat()}, "
                f"{len(after_failover)} of them after the failover, all recovered; "
                f"{len(rows)} recovered in all"
            )

    try:
        asyncio.run(drill())
    finally:
        writer.stop()
        if thread.is_alive():
            thread.join(30)
    assert processes_under(layout.data_dir) == []
