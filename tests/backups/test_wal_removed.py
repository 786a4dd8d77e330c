"""A receiver whose next WAL is gone from a source whose slot is not lost,
against real PostgreSQL 15 and Barman 3.4: what a servicehost pair's
failover does to a receiver further behind than the new primary kept
(Patroni makes backupd's permanent slot there anew, at its present, so
the slot is never "lost"). pg_receivewal is told the segment it asks for
"has already been removed" each time it starts; backupd notices, streams
again from the present, says the window has a gap and takes a base backup
at once, as for a lost slot (test_wal_gap.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from roost.backups.barman import Barman
from roost.backups.clusters import Clusters
from roost.backups.layout import Layout
from roost.backups.staging import Staged
from roost.backups.walreceiver import wal_gone
from tests.backups.pgsource import OneHost, Source, pg_source
from tests.conftest import processes_under


def _next_segment(streaming: Path) -> str:
    """The segment the receiver asks for when started again."""
    names = sorted(p.name.removesuffix(".partial") for p in streaming.iterdir())
    return names[-1]


def _remove_wal_from(src: Source, segment: str) -> None:
    """WAL written and checkpointed until `segment` is gone from pg_wal."""
    src.sql("CREATE TABLE w (v text)")
    for _ in range(20):
        src.sql("INSERT INTO w VALUES ('x')")
        src.sql("SELECT pg_switch_wal()")
        src.sql("CHECKPOINT")
        if segment not in {n for (n,) in src.sql("SELECT name FROM pg_ls_waldir()")}:
            return
    raise AssertionError(f"{segment} was not removed")


async def test_a_receiver_told_its_wal_is_gone_is_reset_and_the_window_starts_again(
    layout: Layout,
) -> None:
    with pg_source() as src:
        host = OneHost(src.pg)
        async with Barman(layout) as barman:
            clusters = Clusters(barman, host, dict)  # type: ignore[arg-type]
            first = await clusters.stage("sh1", layout.root, "capture")
            slot = barman.slot("sh1")
        # backupd away; the slot goes (the old primary's), the WAL the
        # receiver needs next is removed, and a slot of that name is made at
        # the present (Patroni's permanent slot on a new primary).
        streaming = barman.server_dir("sh1") / "streaming"
        src.sql(f"SELECT pg_drop_replication_slot('{slot}')")
        _remove_wal_from(src, _next_segment(streaming))
        src.sql(f"SELECT pg_create_physical_replication_slot('{slot}', true)")
        async with Barman(layout) as barman:
            clusters = Clusters(barman, host, dict)  # type: ignore[arg-type]
            rebased: list[Staged] = []

            async def rebase(h: str) -> None:
                rebased.append(await clusters.stage(h, layout.root, "wal-gap"))

            clusters.rebase = rebase
            await clusters.ensure()  # the receiver starts, and is told
            for _ in range(300):
                if await barman.slot_lost("sh1"):
                    break
                await asyncio.sleep(0.1)
            assert wal_gone(barman.streams._said["sh1"]), barman.streams._said["sh1"]
            await clusters.ensure()  # the next refresh mends it
            [event] = host.events
            assert not event.ok and "sh1: the point-in-time window has a gap" in event.message
            [second] = rebased
            gap = barman.gap("sh1")
            assert gap is not None and second.facts["end"] > gap.timestamp()
            ids = [b.id for b in await barman.backups("sh1")]
            assert ids == [first.facts["backup_id"], second.facts["backup_id"]]
            src.sql("INSERT INTO w VALUES ('after')")
            marked = await barman.mark("sh1")
            window = await barman.window("sh1")
            assert window is not None and marked is not None
            assert window.earliest.timestamp() == second.facts["end"] and window.latest >= marked
            assert not await barman.slot_lost("sh1")
            await clusters.ensure()
            assert len(host.events) == 1 and len(rebased) == 1
    assert processes_under(layout.data_dir) == []
