"""Roles forked from a zygote (roost.proc.forkserver, roost.cli.zygote; issue 21).

A forked child runs `roost ARGS` as `python -m roost ARGS` would, with the
environment, stderr and sockets it is given; its exit comes back as a
Process's would (the sockets a router is handed are proven by every
`roost up`: tests/e2e); the zygote, gone, takes its children with it and the next
spawn makes a new one; a renewed one serves no new spawn and ends with its
last child; nothing is left after stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from roost.proc import spawn
from roost.proc.forkserver import ForkServer, Zygote
from roost.proc.wait import PR_SET_CHILD_SUBREAPER, become_subreaper


async def _stderr(child: object) -> str:
    reader = child.stderr  # type: ignore[attr-defined]
    return (await reader.read()).decode()


@pytest.fixture
def subreaper() -> Iterator[None]:
    """This process a subreaper, as `roost up` is, for one test only: the
    flag is for life otherwise, and a later test in the same worker would
    have every orphan it makes reparented here (test_supervised's detached
    server among them)."""
    assert become_subreaper()
    try:
        yield
    finally:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


async def test_a_forked_command_runs_with_its_env_and_exit(tmp_path: Path) -> None:
    forks = ForkServer(["--data", str(tmp_path)], detach=False)
    try:
        child = await forks.spawn(["--data", str(tmp_path), "no-such-command"], {"A": "1"})
        said = await _stderr(child)
        assert await child.wait() == 2  # click's usage error
        assert "No such command 'no-such-command'" in said
        # A role with its own arguments: its data directory has no keys, its exit 78.
        child = await forks.spawn(["--data", str(tmp_path / "d"), "runner"], {})
        said = await _stderr(child)
        assert await child.wait() == 78, said
        assert f"the keys in {tmp_path / 'd' / 'keys'} cannot be used" in said
        # Its environment is the one given, not the zygote's.
        env = {"ROOST_FORK_ROLES": "maybe"}
        child = await forks.spawn(["--data", str(tmp_path / "d"), "up"], env)
        said = await _stderr(child)
        assert await child.wait() == 1
        assert "ROOST_FORK_ROLES must be 'on' or 'off', not 'maybe'" in said
        [zygote] = forks.pids()
        assert str(tmp_path) in " ".join(psutil.Process(zygote).cmdline())  # ps names it
    finally:
        await forks.stop()
    assert forks.pids() == set()


async def test_a_zygote_gone_takes_its_children_and_is_replaced(tmp_path: Path) -> None:
    """Not detached (a zygote an older roost up started): its children are its own."""
    forks = ForkServer(detach=False)
    try:
        sleeper = await forks.spawn(["--data", str(tmp_path), "up", "--reload"], {})
        # (`up --reload` with no roost up running exits at once: only its end matters)
        await sleeper.wait()
        [first] = forks.pids()
        os.kill(first, signal.SIGKILL)
        async with asyncio.timeout(10):
            while forks.current is not None and forks.current.alive:
                await asyncio.sleep(0.05)
        child = await forks.spawn(["--data", str(tmp_path), "no-such-command"], {})
        assert await child.wait() == 2
        [second] = forks.pids()
        assert second != first
        await forks.renew()  # a reload: the next spawn, a new zygote
        child = await forks.spawn(["--data", str(tmp_path), "no-such-command"], {})
        assert await child.wait() == 2
        async with asyncio.timeout(10):
            while second in forks.pids():  # the old one ends, nothing left to serve
                await asyncio.sleep(0.05)
                forks._prune()
    finally:
        await forks.stop()
    assert forks.pids() == set()


@pytest.mark.usefixtures("subreaper")
async def test_a_spawn_given_up_on_is_not_taken_for_the_next(tmp_path: Path) -> None:
    """A start cancelled after its request went (a supervisor stopping) has its
    child killed when the answer comes; the next start gets its own child,
    and a child that ends at once is reported all the same."""
    forks = ForkServer(detach=True)
    try:
        warm = await forks.spawn(["--data", str(tmp_path), "no-such-command"], {})
        assert await warm.wait() == 2
        first = asyncio.create_task(forks.spawn(["--data", str(tmp_path), "no-such-command"], {}))
        await asyncio.sleep(0)  # its request is sent: it waits for the answer
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        child = await forks.spawn(["--data", str(tmp_path / "d"), "runner"], {})
        said = await _stderr(child)
        async with asyncio.timeout(30):
            assert await child.wait() == 78, said  # its own: the runner's exit, not click's 2
    finally:
        await forks.stop()


def _parent(pid: int) -> int:
    return psutil.Process(pid).ppid()


@pytest.mark.usefixtures("subreaper")
async def test_a_detached_role_is_ours_and_outlives_its_zygote(tmp_path: Path) -> None:
    """Detached (roost up, a subreaper): the role is this process's child, its
    exit and stderr come back with its zygote gone, and the next spawn starts
    a new zygote."""
    forks = ForkServer(["--data", str(tmp_path)], detach=True, idle_exit_s=60.0)
    try:
        # Blocks ~3 s (no roost up on that directory), then exits 1.
        args = ["--data", str(tmp_path / "e"), "status", "--wait", "--timeout", "3"]
        child = await forks.spawn(args, {})
        assert _parent(child.pid) == os.getpid()
        assert child.pid in forks.pids()
        [zygote] = [p for p in forks.pids() if p != child.pid]
        os.kill(zygote, signal.SIGKILL)
        async with asyncio.timeout(10):
            while forks.current is not None and forks.current.alive:
                await asyncio.sleep(0.05)
        assert psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE
        said = await _stderr(child)
        async with asyncio.timeout(30):
            assert await child.wait() == 1
        assert "no roost up is running" in said
        assert child.pid not in forks.pids()
        again = await forks.spawn(["--data", str(tmp_path), "no-such-command"], {})
        assert await again.wait() == 2
        assert zygote not in forks.pids()
    finally:
        await forks.stop()
    assert forks.pids() == set()


@pytest.mark.usefixtures("subreaper")
async def test_an_idle_detached_zygote_retires_by_itself(tmp_path: Path) -> None:
    forks = ForkServer(detach=True, idle_exit_s=0.5)
    try:
        child = await forks.spawn(["--data", str(tmp_path), "no-such-command"], {})
        assert await child.wait() == 2
        assert forks.current is not None
        first = forks.current.proc
        async with asyncio.timeout(20):
            assert await first.wait() == 0  # its own exit, not a signal
        child = await forks.spawn(["--data", str(tmp_path), "no-such-command"], {})
        assert await child.wait() == 2
        assert forks.current.proc is not first
    finally:
        await forks.stop()
    assert forks.pids() == set()


@pytest.mark.usefixtures("subreaper")
async def test_a_spawn_its_zygote_retired_unread_goes_to_a_new_one(tmp_path: Path) -> None:
    """A zygote says goodbye with a request unread (it went idle as the
    request was sent): the request is sent again to a new zygote, once."""
    forks = ForkServer(detach=True, idle_exit_s=60.0)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stand_in = await spawn.start(["sleep", "60"])  # a group of its own, as a zygote
    ours.setblocking(False)
    fake = Zygote(stand_in, ours, forks._adopt)
    fake.reader = asyncio.create_task(fake._read())
    forks.current = fake
    try:
        asked = asyncio.create_task(forks.spawn(["--data", str(tmp_path), "no-such-command"], {}))
        loop = asyncio.get_running_loop()
        theirs.setblocking(False)
        data, fds, _flags, _addr = await loop.run_in_executor(None, lambda: _recv_blocking(theirs))
        for fd in fds:
            os.close(fd)
        assert json.loads(data)["args"][-1] == "no-such-command"
        theirs.send(json.dumps({"bye": True}).encode())
        theirs.close()
        async with asyncio.timeout(60):
            child = await asked
            assert await child.wait() == 2
        assert forks.current is not fake
    finally:
        await forks.stop()
        with contextlib.suppress(ProcessLookupError):
            stand_in.kill()
        await stand_in.wait()


def _recv_blocking(sock: socket.socket) -> tuple[bytes, list[int], int, object]:
    sock.setblocking(True)
    return socket.recv_fds(sock, 1 << 20, 16)
