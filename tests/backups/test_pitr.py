"""Point-in-time recovery of one database and the base backup drill, with
real Barman 3.4 and PostgreSQL 15: rows at t1 and t2, the table dropped at
t3, recovered at t2; a time outside the window refused with nothing done; a
good base backup's drill passes and a corrupted one's fails.

They recover from the package's base backup (`based` in conftest.py), taken
before each test's database `app` was made."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from roost.backups.barman import Barman
from roost.backups.layout import Layout
from roost.backups.pgfacts import compare, pg_tool, run_tool, take_facts
from roost.backups.pitr import OutsideWindow, drill_base_backup, recover_app_database
from roost.backups.scratch import scratch_postgres
from tests.backups.pgsource import BASE, Based, Source


def _now(source: Source) -> datetime:
    [(now,)] = source.sql("SELECT clock_timestamp()")
    return now


async def _rows_of(dump: Path, layout: Layout) -> list[tuple[int, str]]:
    async with scratch_postgres(layout) as pg:
        async with await pg.connect() as c:
            await c.execute("CREATE DATABASE back")
        argv = [pg_tool("pg_restore"), "--no-owner", "--no-acl", "--exit-on-error", "-d", "back",
                str(dump)]  # fmt: skip
        status, out = await run_tool(argv, env=pg.conn.env("back"), timeout=120)
        assert status == 0, out
        async with await pg.connect("back") as c:
            cur = await c.execute("SELECT id, v FROM t ORDER BY id")
            return [(int(i), str(v)) for i, v in await cur.fetchall()]


async def test_recover_at_t2_has_exactly_t1_and_t2_rows(
    base_barman: Barman, source: Source, based: Based, tmp_path: Path
) -> None:
    barman, layout = base_barman, based.layout
    source.sql("INSERT INTO t VALUES (1, 't1'), (2, 't1')", "app")
    source.sql("INSERT INTO t VALUES (3, 't2')", "app")
    t2 = _now(source)
    expected = await take_facts(source.pg, "app")
    source.sql("INSERT INTO t VALUES (4, 'after t2')", "app")
    source.sql("DROP TABLE t", "app")  # t3
    # t2's rows are in no archived segment: only in the streaming .partial one.
    [(segment,)] = source.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    await barman.run("archive-wal", BASE)
    # pg_receivewal may still be a segment behind on a busy machine: wait for
    # it to be streaming t3's segment (that is the premise, not what is tested).
    partial = barman.server_dir(BASE) / "streaming" / f"{segment}.partial"
    for _ in range(300):
        if partial.exists():
            break
        await asyncio.sleep(0.1)
    assert partial.exists()
    assert not list((barman.server_dir(BASE) / "wals").glob(f"*/{segment}"))

    dump = tmp_path / "app.dump"
    facts = await recover_app_database(barman, BASE, "app", t2, dump)
    assert compare(expected, facts) == []
    assert facts.tables["public.t"].rows == 3
    assert await _rows_of(dump, layout) == [(1, "t1"), (2, "t1"), (3, "t2")]
    assert list(layout.scratch.iterdir()) == []  # the scratch cluster is gone


async def test_a_time_outside_the_window_is_refused_and_nothing_changes(
    barman: Barman,
    base_barman: Barman,
    based: Based,
    source: Source,
    layout: Layout,
    tmp_path: Path,
) -> None:
    dump = tmp_path / "app.dump"
    # `barman` streams the source too, with no base backup yet.
    with pytest.raises(OutsideWindow, match="no complete base backup"):
        await recover_app_database(barman, "sh1", "app", datetime.now(UTC), dump)
    source.sql("INSERT INTO t VALUES (1, 'kept')", "app")
    for at in (based.before_backup, datetime.now(UTC) + timedelta(hours=1)):
        with pytest.raises(
            OutsideWindow, match=f"outside the point-in-time window of {BASE}: the window is 20"
        ):
            await recover_app_database(base_barman, BASE, "app", at, dump)
    assert not dump.exists()
    assert list(layout.scratch.iterdir()) == list(based.layout.scratch.iterdir()) == []
    assert source.sql("SELECT id, v FROM t", "app") == [(1, "kept")]


async def test_drill_passes_a_good_base_backup_and_fails_a_corrupted_one(
    base_barman: Barman, based: Based, source: Source
) -> None:
    barman, backup_id = base_barman, based.backup_id
    assert await drill_base_backup(barman, backup_id) == []

    # Flip bytes in the middle of the heap file of `base`'s table t in the base backup.
    [(relpath,)] = source.sql("SELECT pg_relation_filepath('t')", BASE)
    heap = barman.server_dir(BASE) / "base" / backup_id / "data" / relpath
    good = heap.read_bytes()
    data = bytearray(good)
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    heap.write_bytes(bytes(data))
    try:
        problems = await drill_base_backup(barman, backup_id, server=BASE)
    finally:
        heap.write_bytes(good)  # the package's other tests recover from this backup
    assert problems, "a corrupted base backup passed its drill"
    assert any("does not match its manifest" in p and relpath in p for p in problems), problems
