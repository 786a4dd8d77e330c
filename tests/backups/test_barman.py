"""Barman 3.4 against a real PostgreSQL 15: the configuration it reads, a base
backup, the window the streamed WAL (the .partial segment included) gives,
and receive-wal supervised (restarted, its stray pg_receivewal removed,
nothing left once closed). Recovery is test_pitr's."""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from roost.backups.barman import (
    Barman,
    BaseBackup,
    ServerConfig,
    backup_for,
    commit_times,
    parse_check,
    passfile_line,
    render_config,
    server_name,
    slot_name,
    window_of,
)
from roost.backups.barmanconf import own_slot_name
from roost.backups.layout import Layout
from roost.wire.messages import PgSource
from tests.backups.pgsource import BASE, Based, Source
from tests.conftest import processes_under

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# ------------------------------------------------------------------ pure


def test_render_config_reads_back_as_written() -> None:
    src = PgSource(host="10.0.0.7", port=5433, user="roost backup", password="p%w:d")
    text = render_config(
        home=Path("/data/backupd/barman"),
        log_file=Path("/data/backupd/logs/barman.log"),
        user="root",
        passfile=Path("/data/backupd/barman/pgpass"),
        servers=[ServerConfig(server_name("SH-1.example"), src, recovery_window_days=9)],
    )
    cp = configparser.ConfigParser()  # what Barman uses: %-interpolation on
    cp.read_string(text)
    assert cp["barman"]["barman_user"] == "root"
    assert cp["barman"]["barman_home"] == "/data/backupd/barman"
    s = cp["sh-1-example"]
    assert s["conninfo"] == (
        "host=10.0.0.7 port=5433 user='roost backup' passfile=/data/backupd/barman/pgpass "
        "dbname=postgres application_name=barman"
    )
    assert "password" not in text and "p%w" not in text
    assert s["streaming_conninfo"].startswith("host=10.0.0.7 port=5433 user='roost backup'")
    assert s["backup_method"] == "postgres" and s["streaming_archiver"] == "on"
    assert s["slot_name"] == "barman_sh_1_example" and s["create_slot"] == "auto"
    assert s["retention_policy"] == "RECOVERY WINDOW OF 9 DAYS"
    assert s["path_prefix"] == "/usr/lib/postgresql/15/bin"
    assert s["minimum_redundancy"] == "1"
    assert passfile_line(src) == "10.0.0.7:5433:*:roost backup:p%w\\:d"
    with pytest.raises(ValueError, match="one name"):
        render_config(home=Path("/h"), log_file=Path("/l"), user="u", passfile=Path("/p"),
                      servers=[ServerConfig("a", src), ServerConfig("a", src)])  # fmt: skip


def test_names() -> None:
    assert server_name("all") == "host-all"
    assert server_name("Host_2") == "host_2"
    assert slot_name("sh-1") == "barman_sh_1"


def test_window_and_backup_choice_are_pure() -> None:
    b1 = BaseBackup("20260102T000000", "s", "DONE", T0)
    b2 = BaseBackup("20260103T000000", "s", "DONE", T0 + timedelta(days=1))
    failed = BaseBackup("20260101T000000", "s", "FAILED", T0 - timedelta(days=1))
    assert window_of([], T0) is None
    w = window_of([failed, b1, b2], T0 + timedelta(days=2))
    assert w is not None and (w.earliest, w.latest) == (T0, T0 + timedelta(days=2))
    assert w.holds(T0) and not w.holds(T0 + timedelta(days=2)) and not w.holds(T0 - timedelta(1))
    # No commit since the backup: an empty window, nothing can be recovered to.
    w = window_of([b1], None)
    assert w is not None and not w.holds(T0)
    assert backup_for([failed, b1, b2], T0 + timedelta(hours=30)) == b2
    assert backup_for([failed, b1, b2], T0 + timedelta(hours=3)) == b1
    assert backup_for([failed, b1, b2], T0 - timedelta(seconds=1)) is None


def test_commit_times_from_pg_waldump() -> None:
    out = (
        "rmgr: Transaction len (rec/tot):     34/    34, tx:        744, lsn: 0/07001840, "
        "prev 0/07000FC0, desc: COMMIT 2026-12-05 18:01:21.739066 UTC\n"
        "rmgr: Transaction len (rec/tot):     34/    34, tx:        745, lsn: 0/070018E8, "
        "prev 0/070018A8, desc: ABORT 2026-12-05 18:01:24.92446 UTC\n"
        "rmgr: Transaction len (rec/tot):     98/    98, tx:          0, lsn: 0/0700A000, "
        "prev 0/070018E8, desc: RUNNING_XACTS nextXid 746 latestCompletedXid 745\n"
    )
    assert commit_times(out) == [
        datetime(2026, 12, 5, 18, 1, 21, 739066, tzinfo=UTC),
        datetime(2026, 12, 5, 18, 1, 24, 924460, tzinfo=UTC),
    ]


def test_parse_check() -> None:
    text = (
        '{"s": {"wal_level": {"hint": "", "status": "OK"}, '
        '"replication_slot": {"hint": "slot not active", "status": "FAILED"}}}'
    )
    assert parse_check(text, "s") == ["replication slot: slot not active"]


# ------------------------------------------------------------------ real


def _receivers(layout: Layout) -> list[psutil.Process]:
    found = []
    for p in processes_under(layout.data_dir):
        # A process listed may be gone by the time it is asked its name (the
        # receiver the test just killed, on a busy machine).
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.name() == "pg_receivewal":
                found.append(p)
    return found


async def test_backup_window_and_check(
    barman: Barman, base_barman: Barman, based: Based, source: Source
) -> None:
    assert await barman.window("sh1") is None  # streaming, no base backup yet
    # The package's server, whose first base backup `based` took with Barman.backup.
    backup_id = based.backup_id
    backups = await base_barman.backups(BASE)
    assert [(b.id, b.status) for b in backups] == [(backup_id, "DONE")]
    assert await base_barman.check(BASE) == []

    source.sql("INSERT INTO t VALUES (1, 'a')", "app")
    marked = await base_barman.mark(BASE)
    assert marked is not None
    window = await base_barman.window(BASE)
    info = await base_barman.backup_info(BASE, backup_id)
    assert window is not None and window.earliest == info.end
    # The newest commit held is the mark, still in the streaming .partial segment.
    assert window.latest >= marked
    assert list((base_barman.server_dir(BASE) / "streaming").glob("*.partial"))


async def _wait_receivers(layout: Layout, but: int = 0) -> list[psutil.Process]:
    for _ in range(300):
        found = [p for p in _receivers(layout) if p.pid != but]
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError("no pg_receivewal streaming")


async def _supervised_pid(barman: Barman, name: str, but: int = 0) -> int:
    """The pid Barman's supervisor knows `name` by (other than `but`). A
    process exists a moment before the supervisor's spawn returns (it awaits
    the child's pipes on this same loop): its pid comes then."""
    for _ in range(100):
        if (pid := barman.streams._sup.pid(name)) not in (0, but):
            return pid
        await asyncio.sleep(0.1)
    return barman.streams._sup.pid(name)


async def test_receive_wal_is_restarted_when_it_exits(barman: Barman, layout: Layout) -> None:
    name = "receive-wal:sh1"
    [receiver] = await _wait_receivers(layout)
    first = await _supervised_pid(barman, name)
    psutil.Process(first).kill()
    assert len(await _wait_receivers(layout, but=receiver.pid)) == 1
    assert await _supervised_pid(barman, name, but=first) not in (0, first)
    assert barman.streams._sup.children[name].restarts == 1
    assert not receiver.is_running() or receiver.status() == psutil.STATUS_ZOMBIE
    assert await barman.mark("sh1") is not None  # and it streams


async def test_a_stray_pg_receivewal_is_removed(source: Source, layout: Layout) -> None:
    """A backupd killed with SIGKILL takes its `barman receive-wal` along
    (PR_SET_PDEATHSIG) but not Barman's pg_receivewal, which keeps the slot
    (a backupd's own, as slots.py names one: the new receive-wal waits
    until that slot is let go, and is not refused it)."""
    slot = own_slot_name("bk1", "sh1")
    config = ServerConfig("sh1", source.pg, immediate_checkpoint=True, slot=slot)
    await Barman(layout).ensure([config])  # the configuration of a backupd before
    old = subprocess.Popen(
        [shutil.which("barman") or "barman", "-c", str(layout.barman / "barman.conf"),
         "receive-wal", "sh1"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        [stray] = await _wait_receivers(layout)
    finally:
        old.kill()
        old.wait()
    assert stray.is_running()
    async with Barman(layout) as barman:
        await barman.ensure([config])
        assert len(await _wait_receivers(layout, but=stray.pid)) == 1
        assert not stray.is_running() or stray.status() == psutil.STATUS_ZOMBIE
        assert await barman.mark("sh1") is not None
        assert barman.streams._sup.children["receive-wal:sh1"].restarts == 0
        query = f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"
        assert source.sql(query) == [(True,)]
    assert processes_under(layout.data_dir) == []


async def test_an_unreachable_source_gives_no_mark_and_the_window_stands(
    base_barman: Barman,
) -> None:
    barman = base_barman  # with the package's base backup
    before = await barman.window(BASE)
    barman.servers[BASE] = ServerConfig(
        BASE, PgSource(host="127.0.0.1", port=1, user="x", password="y")
    )
    assert await barman.mark(BASE) is None
    after = await barman.window(BASE)
    # (the source's own background commits, if any, may only move the end on)
    assert before is not None and after is not None
    assert after.earliest == before.earliest and after.latest >= before.latest


async def test_ensure_again_keeps_streaming_and_a_server_removed_stops(
    barman: Barman, layout: Layout
) -> None:
    config = barman.servers["sh1"]
    # Twice at once (nothing applied in between) and again: one receive-wal.
    await barman.ensure([config])
    await barman.ensure([config])
    assert len(await _wait_receivers(layout)) == 1
    assert barman.streams._sup.children["receive-wal:sh1"].restarts == 0
    await barman.ensure([])
    assert "receive-wal:sh1" not in barman.streams._sup.children
    assert _receivers(layout) == []
    assert "[sh1]" not in barman.config_file.read_text()


async def test_a_command_s_temporary_files_go_whatever_ends_it(
    layout: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Barman makes temporary directories in TMPDIR (a recovery's, a backup's rsync
    lists) and removes them only when it ends its own way: each command gets one
    of its own, removed after it, out of time or failed, never left in /tmp."""
    import roost.backups.barman as barman_module

    said = tmp_path / "tmpdir"
    stand_in = tmp_path / "barman"
    stand_in.write_text(
        "#!/bin/sh\n"
        f'echo "$TMPDIR" > {said}\n'
        'd=$(mktemp -d "$TMPDIR/barman_recovery-XXXXXXXX") && touch "$d/recovery.conf"\n'
        '[ "$5" = fail ] && exit 3\n'
        "exec sleep 30\n"
    )
    stand_in.chmod(0o755)
    monkeypatch.setattr(barman_module, "_barman", lambda: str(stand_in))
    b = Barman(layout)
    b.home.mkdir(parents=True, exist_ok=True)
    stale = b.home / ".tmp" / "left-by-a-killed-daemon"
    stale.mkdir(parents=True)
    old = datetime.now(UTC).timestamp() - barman_module.STALE_TMP_S - 60
    os.utime(stale, (old, old))
    with pytest.raises(TimeoutError):
        await b.run("recover", "x", timeout=1.0)  # killed at its timeout
    first = Path(said.read_text().strip())
    assert first.parent == b.home / ".tmp" and not first.exists()
    assert not stale.exists()
    with pytest.raises(barman_module.BarmanError):
        await b.run("recover", "x", "fail")
    assert list((b.home / ".tmp").iterdir()) == []
