"""A backupd away longer than the servicehost keeps WAL for its slot, against
real PostgreSQL 15 (max_slot_wal_keep_size 32MB: two 16 MB segments) and
Barman 3.4: the slot is invalidated and the WAL Barman needs next removed,
so receive-wal can never go on. backupd notices, streams again from the
present through a slot made anew, says the window has a gap, and takes a
base backup at once: the window starts again at it and reaches now."""

from __future__ import annotations

import asyncio

from roost.backups.barman import Barman
from roost.backups.barmanwal import SEGMENT
from roost.backups.clusters import Clusters
from roost.backups.layout import Layout
from roost.backups.staging import Staged
from tests.backups.pgsource import OneHost, Source, pg_source
from tests.conftest import processes_under


def _wal_status(src: Source) -> list[tuple]:
    return src.sql("SELECT slot_name, wal_status, active FROM pg_replication_slots")


def _outrun_the_slot(src: Source) -> None:
    """WAL past the slot's limit, and checkpoints until the slot is lost."""
    src.sql("CREATE TABLE w (v text)")
    for _ in range(30):
        for _ in range(3):
            src.sql("INSERT INTO w VALUES ('x')")
            src.sql("SELECT pg_switch_wal()")
        src.sql("CHECKPOINT")
        if [s for _, s, _ in _wal_status(src)] == ["lost"]:
            return
    raise AssertionError(f"the slot was not invalidated: {_wal_status(src)}")


async def test_a_lost_slot_is_reset_reported_and_the_window_starts_again(
    layout: Layout,
) -> None:
    with pg_source() as src:
        src.sql("ALTER SYSTEM SET max_slot_wal_keep_size = '32MB'")
        src.sql("SELECT pg_reload_conf()")
        host = OneHost(src.pg)
        async with Barman(layout) as barman:
            clusters = Clusters(barman, host, dict)  # type: ignore[arg-type]
            first = await clusters.stage("sh1", layout.root, "capture")
        # backupd away (its receiver stopped) while the source writes on.
        _outrun_the_slot(src)
        async with Barman(layout) as barman:
            clusters = Clusters(barman, host, dict)  # type: ignore[arg-type]
            rebased: list[Staged] = []

            async def rebase(h: str) -> None:
                rebased.append(await clusters.stage(h, layout.root, "wal-gap"))

            clusters.rebase = rebase
            await clusters.ensure()
            [event] = host.events
            assert not event.ok and event.kind == "pgbase"
            assert "sh1: the point-in-time window has a gap" in event.message
            [second] = rebased
            gap = barman.gap("sh1")
            assert gap is not None and second.facts["end"] > gap.timestamp()
            ids = [b.id for b in await barman.backups("sh1")]
            assert ids == [first.facts["backup_id"], second.facts["backup_id"]]
            # Streaming again through a slot that holds WAL, and the window
            # runs from the new base backup to now.
            for _ in range(300):
                if _wal_status(src) == [(barman.slot("sh1"), "reserved", True)]:
                    break
                await asyncio.sleep(0.1)
            assert _wal_status(src) == [(barman.slot("sh1"), "reserved", True)]
            src.sql("INSERT INTO w VALUES ('after')")
            marked = await barman.mark("sh1")
            window = await barman.window("sh1")
            assert window is not None and marked is not None
            assert window.earliest.timestamp() == second.facts["end"]
            assert window.latest >= marked
            assert await barman.check("sh1") == []
            # Between the nights, archive-wal (schedule.py) leaves only the
            # segment being streamed in the streaming directory.
            await clusters.archive_wal("sh1")
            streaming = barman.server_dir("sh1") / "streaming"
            assert [p.name for p in streaming.iterdir() if SEGMENT.match(p.name)] == []
            # Once mended, a refresh finds nothing more to do.
            await clusters.ensure()
            assert len(host.events) == 1 and len(rebased) == 1
    assert processes_under(layout.data_dir) == []
