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
import os
import signal
from pathlib import Path

import psutil

from roost.proc.forkserver import ForkServer


async def _stderr(child: object) -> str:
    reader = child.stderr  # type: ignore[attr-defined]
    return (await reader.read()).decode()


async def test_a_forked_command_runs_with_its_env_and_exit(tmp_path: Path) -> None:
    forks = ForkServer(["--data", str(tmp_path)])
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
    forks = ForkServer()
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


async def test_a_spawn_given_up_on_is_not_taken_for_the_next(tmp_path: Path) -> None:
    """A start cancelled after its request went (a supervisor stopping) has its
    child killed when the answer comes; the next start gets its own child,
    and a child that ends at once is reported all the same."""
    forks = ForkServer()
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
