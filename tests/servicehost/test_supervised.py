"""Servers under the servicehost's supervisor (supervised.py), with small
real detached processes standing in for PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from roost.servicehost.detached import adoptable, launch
from roost.servicehost.supervised import Servers, Supervised
from roost.servicehost.user import ServiceUser

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
ME = ServiceUser(name="me", uid=os.getuid(), gid=os.getgid(), dropped=False)
LOG = logging.getLogger("test")


class FakeServer:
    """A 'server' that records its pid in `<dir>/pid` (as a real one does),
    is ready once `<dir>/ready` exists, and stops on SIGINT."""

    stop_signal = signal.SIGINT
    stop_grace_s = 5.0

    def __init__(self, directory: Path, name: str = "fake") -> None:
        self.name = name
        self.dir = directory
        self.dir.mkdir(exist_ok=True)
        self.log_file = directory / "log"
        self.launched: list[int] = []
        self.ready: list[tuple[int, bool]] = []

    async def find(self) -> int | None:
        try:
            pid = int((self.dir / "pid").read_text())
        except FileNotFoundError:
            return None
        return None if adoptable(pid, sys.executable, self.dir, os.getuid()) else pid

    async def launch(self) -> int:
        pid = await launch(SLEEPER, ME, self.log_file, self.dir)
        (self.dir / "pid").write_text(str(pid))
        self.launched.append(pid)
        return pid

    async def wait_ready(self, pid: int, adopted: bool) -> None:
        while not (self.dir / "ready").exists():
            await asyncio.sleep(0.01)
        self.ready.append((pid, adopted))


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids a test started: whatever is still running at the end is killed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_a_server_is_detached_restarted_after_a_crash_and_stopped(
    tmp_path: Path, leftovers: list[int]
) -> None:
    server = FakeServer(tmp_path / "a")
    (server.dir / "ready").touch()
    servers = Servers(LOG)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(servers.run())
        s = Supervised(servers, server, backoff_max_s=0.05)
        assert s.state == "starting"  # before the loop has even started it
        assert await s.wait_up(10) and s.is_up
        first = s.pid
        leftovers.append(first)
        proc = psutil.Process(first)
        # Not our child, in a session of its own: it outlives the daemon.
        assert proc.ppid() != os.getpid() and os.getsid(first) == first
        os.kill(first, signal.SIGKILL)
        async with asyncio.timeout(30):
            while not (s.is_up and s.pid not in (0, first)):
                await asyncio.sleep(0.01)
        assert s.restarts == 1 and s.last_error.startswith("exited")
        second = s.pid
        leftovers.append(second)
        await s.stop()
        assert gone(second) and "fake" not in servers.children
        servers.stop()
    assert server.launched == [first, second]


async def test_a_released_server_keeps_running_and_the_next_supervisor_adopts_it(
    tmp_path: Path, leftovers: list[int]
) -> None:
    server = FakeServer(tmp_path / "a")
    (server.dir / "ready").touch()
    first = Servers(LOG)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(first.run())
        s = Supervised(first, server, backoff_max_s=0.05)
        assert await s.wait_up(10)
        pid = s.pid
        leftovers.append(pid)
        first.release()
    assert not gone(pid)

    again = FakeServer(tmp_path / "a")
    second = Servers(LOG)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(second.run())
        s = Supervised(second, again, backoff_max_s=0.05)
        assert await s.wait_up(10) and s.pid == pid
        assert again.launched == [] and again.ready == [(pid, True)]
        # Adopted, it is watched: a crash is restarted.
        os.kill(pid, signal.SIGKILL)
        async with asyncio.timeout(30):
            while not (s.is_up and s.pid not in (0, pid)):
                await asyncio.sleep(0.01)
        leftovers.append(s.pid)
        second.stop()
    assert all(gone(p) for p in [pid, *again.launched])


async def test_a_cancelled_owner_leaves_its_servers_running(
    tmp_path: Path, leftovers: list[int]
) -> None:
    servers = Servers(LOG)
    task = asyncio.create_task(servers.run())
    fakes = [FakeServer(tmp_path / "a"), FakeServer(tmp_path / "b", "other")]
    for f in fakes:
        (f.dir / "ready").touch()
    handles = [Supervised(servers, f, backoff_max_s=0.05) for f in fakes]
    assert all([await h.wait_up(10) for h in handles])
    pids = [h.pid for h in handles]
    leftovers.extend(pids)
    task.cancel()  # a crash of the daemon: as a SIGKILL would, it leaves them
    await asyncio.gather(task, return_exceptions=True)
    assert not any(gone(pid) for pid in pids)


async def test_a_recorded_pid_of_another_process_is_not_adopted(
    tmp_path: Path, leftovers: list[int]
) -> None:
    other = subprocess.Popen(["sleep", "600"], cwd=tmp_path)
    try:
        server = FakeServer(tmp_path / "a")
        (server.dir / "pid").write_text(str(other.pid))  # a stale record, its pid reused
        (server.dir / "ready").touch()
        servers = Servers(LOG)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(servers.run())
            s = Supervised(servers, server, backoff_max_s=0.05)
            assert await s.wait_up(10)
            leftovers.append(s.pid)
            assert s.pid != other.pid and server.launched == [s.pid]
            servers.stop()
        assert other.poll() is None  # never signalled
    finally:
        other.kill()
        other.wait()


async def test_a_server_not_ready_in_time_is_stopped_and_retried(
    tmp_path: Path, leftovers: list[int]
) -> None:
    server = FakeServer(tmp_path / "a")  # never ready: no marker
    servers = Servers(LOG)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(servers.run())
        s = Supervised(servers, server, backoff_max_s=0.05, ready_timeout_s=0.2)
        async with asyncio.timeout(30):
            while len(server.launched) < 2:
                await asyncio.sleep(0.01)
        leftovers.extend(server.launched)
        assert s.last_error.startswith("did not answer within 0.2s")
        assert not await s.wait_up(0.05)
        (server.dir / "ready").touch()
        assert await s.wait_up(10)
        leftovers.extend(server.launched)
        servers.stop()
    assert s.state == "stopped"
    assert all(gone(pid) for pid in server.launched)  # every one launched was stopped
