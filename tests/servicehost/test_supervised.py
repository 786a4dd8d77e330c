"""The supervision loop with small real processes standing in for servers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import psutil

from roost.procs import die_with_parent, terminate
from roost.servicehost.backoff import RestartPolicy
from roost.servicehost.supervised import Supervised

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


class FakeServer:
    """A 'server' that is ready once its marker file exists."""

    name = "fake"

    def __init__(self, tmp: Path, argv: list[str] | None = None) -> None:
        self.tmp = tmp
        self.argv = argv or SLEEPER
        self.spawned: list[int] = []
        self.stopped: list[int] = []

    async def spawn(self) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(*self.argv, preexec_fn=die_with_parent)
        self.spawned.append(proc.pid)
        return proc

    async def wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        while not (self.tmp / "ready").exists():
            await asyncio.sleep(0.01)

    async def stop(self, proc: asyncio.subprocess.Process) -> None:
        self.stopped.append(proc.pid)
        await terminate(proc, 5.0)


FAST = RestartPolicy(base_s=0.01, max_s=0.05, stable_s=60)


async def test_crash_is_restarted_and_stop_reaps(tmp_path: Path) -> None:
    (tmp_path / "ready").touch()
    server = FakeServer(tmp_path)
    sup = Supervised(server, FAST)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sup.run())
        assert await sup.wait_up(10)
        first = sup.pid
        os.kill(first, signal.SIGKILL)
        for _ in range(1000):
            if sup.is_up and sup.pid not in (0, first):
                break
            await asyncio.sleep(0.01)
        assert sup.is_up and sup.pid != first
        assert sup.restarts == 1 and sup.last_error == "exited with status -9"
        second = sup.pid
        await sup.stop()
    assert sup.state == "stopped" and server.stopped == [second]
    assert not psutil.pid_exists(second) or psutil.Process(second).status() == "zombie"


async def test_not_ready_in_time_is_stopped_and_retried(tmp_path: Path) -> None:
    server = FakeServer(tmp_path)  # never ready: no marker
    sup = Supervised(server, FAST, ready_timeout_s=0.2)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sup.run())
        for _ in range(500):
            if len(server.spawned) >= 2:
                break
            await asyncio.sleep(0.01)
        assert "did not answer within" in sup.last_error
        assert not await sup.wait_up(0.05)
        (tmp_path / "ready").touch()
        assert await sup.wait_up(10)
        await sup.stop()
    # Every process that was spawned was stopped by the supervisor.
    assert sorted(server.stopped) == sorted(server.spawned)


async def test_cancelled_owner_still_stops_the_server(tmp_path: Path) -> None:
    (tmp_path / "ready").touch()
    server = FakeServer(tmp_path)
    sup = Supervised(server, FAST)
    task = asyncio.create_task(sup.run())
    assert await sup.wait_up(10)
    pid = sup.pid
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert server.stopped == [pid] and sup.state == "stopped"


async def test_spawn_failure_backs_off(tmp_path: Path) -> None:
    server = FakeServer(tmp_path, argv=[str(tmp_path / "missing-binary")])
    sup = Supervised(server, FAST)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sup.run())
        for _ in range(500):
            if sup.restarts >= 3:
                break
            await asyncio.sleep(0.01)
        assert sup.restarts >= 3 and sup.last_error.startswith("could not start")
        await sup.stop()
    assert sup.state == "stopped"
