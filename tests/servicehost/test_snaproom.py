"""The snapshot-room guard on a real Redis whose directory is a small file
system of its own (a tmpfs): filled, the server's own snapshots go off and it
says why; emptied, they come back; its config keeps it so across a restart."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from roost.servicehost.binaries import find_binaries
from roost.servicehost.redis import SAVE_POINTS, RedisServer
from roost.servicehost.snaproom import check
from roost.servicehost.state import Service
from roost.servicehost.supervised import Servers, Supervised
from roost.servicehost.user import ServiceUser
from tests.conftest import free_port

pytestmark = pytest.mark.e2e

MiB = 2**20


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 96 MiB file system (as root: a tmpfs mounted for the test)."""
    where = Path(tempfile.mkdtemp(prefix="roost-snaproom-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m,mode=0700", "tmpfs", str(where)],
                   check=True)  # fmt: skip
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
async def redis(small_disk: Path) -> AsyncIterator[tuple[RedisServer, Supervised]]:
    me = pwd.getpwuid(os.getuid())
    user = ServiceUser(me.pw_name, me.pw_uid, me.pw_gid, dropped=False)
    svc = Service(app="snap", kind="redis", port=free_port(), password="p", memory_mb=16,
                  admin_password="adm", backup_password="b")  # fmt: skip
    (small_disk / "logs").mkdir()
    server = RedisServer(find_binaries(), small_disk / "redis", small_disk / "logs", user, svc,
                         ["127.0.0.1"])  # fmt: skip
    sup = Servers(logging.getLogger("test"))
    running = asyncio.create_task(sup.run())
    supervised = Supervised(sup, server, backoff_max_s=1.0)
    try:
        assert await supervised.wait_up(30)
        yield server, supervised
    finally:
        sup.stop()
        await running


async def _config(server: RedisServer, name: str) -> str:
    async with server.admin() as r:
        return str((await r.call("CONFIG", "GET", name))[1])


async def test_snapshots_go_off_when_the_disk_fills_and_come_back(
    redis: tuple[RedisServer, Supervised], small_disk: Path
) -> None:
    server, supervised = redis
    assert await check({"snap": server}) == {"snap": ""}
    assert await _config(server, "save") == SAVE_POINTS

    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (40 * MiB))  # 56 MiB left: below the 64 MiB kept free
    verdict = await check({"snap": server})
    assert verdict["snap"].startswith("snapshots off: a snapshot of")
    assert server.snapshot_problem == verdict["snap"]
    assert await _config(server, "save") == ""
    assert await _config(server, "auto-aof-rewrite-percentage") == "0"
    assert 'save ""' in server.conf_path.read_text().splitlines()  # a restart keeps them off
    await supervised.stop()
    supervised = Supervised(supervised.servers, server, backoff_max_s=1.0)
    assert await supervised.wait_up(30)
    assert await _config(server, "save") == ""

    filler.unlink()
    assert await check({"snap": server}) == {"snap": ""}
    assert server.snapshot_problem == ""
    assert await _config(server, "save") == SAVE_POINTS
    assert await _config(server, "auto-aof-rewrite-percentage") == "100"
    async with server.admin() as r:
        await r.call("SET", "k", "v")
        assert await r.call("BGSAVE") == "Background saving started"
