"""Servers under the servicehost's supervisor, with small real processes standing in."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import psutil

from roost.proc.spawn import start
from roost.proc.supervise import Supervisor
from roost.servicehost.supervised import Supervised

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


class FakeServer:
    """A 'server' that is ready once its marker file exists; stops on SIGINT."""

    name = "fake"
    stop_signal = signal.SIGINT
    stop_grace_s = 5.0

    def __init__(self, tmp: Path, argv: list[str] | None = None) -> None:
        self.tmp = tmp
        self.argv = argv or SLEEPER
        self.spawned: list[int] = []

    async def spawn(self) -> asyncio.subprocess.Process:
        proc = await start(self.argv)
        self.spawned.append(proc.pid)
        return proc

    async def wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        while not (self.tmp / "ready").exists():
            await asyncio.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_a_crashed_server_is_restarted_and_removal_stops_it(tmp_path: Path) -> None:
    (tmp_path / "ready").touch()
    server = FakeServer(tmp_path)
    sup = Supervisor()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sup.run())
        s = Supervised(sup, server, backoff_max_s=0.05)
        assert s.state == "starting"  # before the loop has even started it
        assert await s.wait_up(10) and s.is_up
        first = s.pid
        os.kill(first, signal.SIGKILL)
        async with asyncio.timeout(30):
            while not (s.is_up and s.pid not in (0, first)):
                await asyncio.sleep(0.01)
        assert s.restarts == 1 and s.last_error == "killed by SIGKILL"
        second = s.pid
        await s.stop()
        assert gone(second) and "fake" not in sup.children
        sup.stop()
    assert server.spawned == [first, second]


async def test_a_server_not_ready_in_time_is_stopped_and_retried(tmp_path: Path) -> None:
    server = FakeServer(tmp_path)  # never ready: no marker
    sup = Supervisor()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sup.run())
        s = Supervised(sup, server, backoff_max_s=0.05, ready_timeout_s=0.2)
        async with asyncio.timeout(30):
            while len(server.spawned) < 2:
                await asyncio.sleep(0.01)
        assert s.last_error == "did not answer within 0.2s"
        assert not await s.wait_up(0.05)
        (tmp_path / "ready").touch()
        assert await s.wait_up(10)
        sup.stop()
    assert s.state == "stopped"
    assert all(gone(pid) for pid in server.spawned)  # every one spawned was stopped


async def test_a_cancelled_owner_still_stops_every_server(tmp_path: Path) -> None:
    (tmp_path / "ready").touch()
    sup = Supervisor()
    task = asyncio.create_task(sup.run())
    servers = [FakeServer(tmp_path), FakeServer(tmp_path)]
    servers[1].name = "other"
    handles = [Supervised(sup, s, backoff_max_s=0.05) for s in servers]
    assert all([await h.wait_up(10) for h in handles])
    pids = [h.pid for h in handles]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert all(gone(pid) for pid in pids) and {h.state for h in handles} == {"stopped"}
