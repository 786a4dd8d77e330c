"""Scratch servers: run as roost-backup on loopback, gone (process and files)
when the block ends, also when it is cancelled."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import psutil
import pytest

from roost.backups.layout import Layout
from roost.backups.scratch import SCRATCH_USER, ScratchError, scratch_postgres, scratch_redis
from roost.sysuser import Unreachable
from tests.conftest import processes_under


def _owner(pid: int) -> str:
    return pwd.getpwuid(psutil.Process(pid).uids().real).pw_name


def _listening(port: int) -> set[str]:
    return {
        c.laddr.ip
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


async def test_scratch_postgres_runs_as_its_user_and_leaves_nothing(layout: Layout) -> None:
    async with scratch_postgres(layout) as pg:
        async with await pg.connect() as c:
            await c.execute("CREATE TABLE x (a int)")
            await c.execute("INSERT INTO x VALUES (1)")
            cur = await c.execute("SELECT count(*), current_user, pg_backend_pid() FROM x")
            count, user, backend = (await cur.fetchone()) or (0, "", 0)
            if os.geteuid() == 0:  # while connected: the backend ends with the connection
                assert _owner(backend) == SCRATCH_USER
        assert count == 1 and user == pg.superuser
        if os.geteuid() == 0:
            assert pwd.getpwuid(pg.pgdata.stat().st_uid).pw_name == SCRATCH_USER
        assert _listening(pg.port) == {"127.0.0.1"}
        run = pg.pgdata.parent
    assert not run.exists() and not pg.socket_dir.exists()
    assert processes_under(layout.data_dir) == []
    assert processes_under(pg.socket_dir) == []


async def test_cancelled_start_leaves_no_process(layout: Layout) -> None:
    started = asyncio.Event()

    async def use() -> None:
        async with scratch_postgres(layout):
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(use())
    await asyncio.wait_for(started.wait(), 120)
    assert processes_under(layout.data_dir)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert processes_under(layout.data_dir) == []
    assert list(layout.scratch.iterdir()) == []


async def test_a_cluster_that_cannot_start_says_why(layout: Layout) -> None:
    bad = layout.scratch / "bad"
    bad.mkdir()
    (bad / "PG_VERSION").write_text("15\n")  # not a cluster
    with pytest.raises(ScratchError, match="exited"):
        async with scratch_postgres(layout, pgdata=bad, login_as="nobody"):
            pass
    assert processes_under(layout.data_dir) == []


async def test_scratch_redis_loads_an_rdb(layout: Layout, tmp_path: Path) -> None:
    async with scratch_redis(layout) as r:
        for i in range(5):
            await r.command("SET", f"k{i}", "v")
        await r.command("SELECT", "0")
        assert await r.key_count() == 5
        await r.command("SAVE")
        rdb = tmp_path / "dump.rdb"
        shutil.copyfile(r.dir / "dump.rdb", rdb)
        info = await r.command("INFO", "server")
        pid = int(info.split("process_id:")[1].split()[0])
        if os.geteuid() == 0:
            assert _owner(pid) == SCRATCH_USER
    async with scratch_redis(layout, rdb=rdb) as r2:
        assert await r2.key_count() == 5
        assert await r2.command("GET", "k3") == "v"
    assert processes_under(layout.data_dir) == []
    assert list(layout.scratch.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root drops to another user")
async def test_a_data_dir_the_user_cannot_reach_is_a_clear_error() -> None:
    outer = Path(tempfile.mkdtemp(prefix="roost-closed-"))  # 0700, root's
    try:
        lay = Layout(outer / "data")
        lay.create()
        with pytest.raises(Unreachable, match="not searchable"):
            async with scratch_postgres(lay):
                pass
    finally:
        shutil.rmtree(outer, ignore_errors=True)


async def test_a_long_data_path_puts_the_socket_under_tmp() -> None:
    base = Path(tempfile.mkdtemp(prefix="roost-bk-"))
    try:
        os.chmod(base, 0o711)
        lay = Layout(base / ("d" * 80))  # too long for a unix socket path below it
        lay.create()
        async with scratch_postgres(lay) as pg:
            assert pg.socket_dir.parent == Path(tempfile.gettempdir())
            async with await pg.connect() as c:
                await c.execute("SELECT 1")
        assert not pg.socket_dir.exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
