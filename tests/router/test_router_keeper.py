"""`roost router-keeper` takes a port over from a router that bound it
itself (as 0.1.0's did: two workers with SO_REUSEPORT, or one alone), then
replaces its own router on SIGHUP and stops on TERM: under steady load
through the port (tests/e2e/load.py), no request fails."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from roost.proc.activation import MIGRATE_REQ
from tests.e2e.load import Load
from tests.router.conftest import app
from tests.router.test_daemon import route_feed
from tests.router.test_feed import free_port
from tests.router.test_router_handover import until


def started(argv: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen(
            argv, env=dict(os.environ, ROOST_METRICS_PORT="0", **env), stderr=err
        )


@pytest.fixture
def migrate_req_kept() -> Any:
    """The keeper sets net.ipv4.tcp_migrate_req (this namespace's): given back as found."""
    was = MIGRATE_REQ.read_text()
    yield
    MIGRATE_REQ.write_text(was)


def pid_in(pidfile: Path) -> int:
    try:
        return int(pidfile.read_text())
    except (FileNotFoundError, ValueError):
        return 0


async def test_takes_over_a_self_bound_router_then_replaces_and_stops(
    backends: Any, tmp_path: Path, migrate_req_kept: None
) -> None:
    one = await backends("one")
    ctl = await route_feed(tmp_path, [app("hello", one)])
    port = free_port()
    roost = [sys.executable, "-m", "roost", "--data", str(tmp_path)]
    old_log, keeper_log = tmp_path / "old.log", tmp_path / "keeper.log"
    pidfile = tmp_path / "router.pid"
    old = started([*roost, "router", "--port", str(port)], old_log, ROOST_ROUTER_WORKERS="2")
    keeper: subprocess.Popen[bytes] | None = None
    gets = Load(port, "hello.localhost", "/id", keep_alive=3, fresh=2)
    try:
        await until(lambda: old_log.read_text().count(" serving http on ") == 2, "the old router")
        gets.start()
        await until(lambda: gets.result.total >= 50, "load through the old router")

        argv = [*roost, "router-keeper", "--port", str(port), "--tls-port", "0"]
        keeper = started([*argv, "--take-over", "--pidfile", str(pidfile)], keeper_log)
        await until(lambda: " serving http on " in keeper_log.read_text(), "the keeper's router")
        assert MIGRATE_REQ.read_text().strip() == "1"
        first = pid_in(pidfile)
        assert first != 0 and psutil.Process(first).ppid() == keeper.pid
        # Every new connection goes to the keeper's socket: the old router's
        # count of requests stops growing, so TERM loses nothing.
        old.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(old.wait, 60) == 0, old_log.read_text()
        mark = gets.result.total
        await until(lambda: gets.result.total >= mark + 50, "load through the keeper's router")

        keeper.send_signal(signal.SIGHUP)  # a new router on the held socket, the old drains
        await until(lambda: pid_in(pidfile) not in (0, first), "a replaced router")
        await until(lambda: not psutil.pid_exists(first), "the replaced router gone")
        mark = gets.result.total
        await until(lambda: gets.result.total >= mark + 50, "load through the new router")
        result = await asyncio.to_thread(gets.stop)
        assert result.failures == [], result.failures[:5]
        assert result.ok > 0

        second = pid_in(pidfile)
        family = psutil.Process(keeper.pid).children(recursive=True)
        assert second in {p.pid for p in family}
        keeper.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(keeper.wait, 60) == 0, keeper_log.read_text()
        _, alive = psutil.wait_procs(family, timeout=10)
        assert alive == []
    finally:
        await asyncio.to_thread(gets.stop)
        for p in (old, keeper):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        await ctl.stop()


async def test_a_port_bound_without_reuse_port_is_taken_over_too(
    backends: Any, tmp_path: Path, migrate_req_kept: None
) -> None:
    """A router with one worker binds without SO_REUSEPORT: the keeper gives
    its socket the option and joins it (here the holder never accepts, so
    every request is the keeper's router's: those sent before it joined
    wait in the holder's backlog, and move to the keeper's socket when the
    holder is killed)."""
    one = await backends("one")
    ctl = await route_feed(tmp_path, [app("hello", one)])
    code = (
        "import socket, sys, time\n"
        "s = socket.create_server(('127.0.0.1', int(sys.argv[1])), backlog=4096)\n"
        "print('listening', flush=True)\n"
        "time.sleep(600)\n"
    )
    port = free_port()
    holder = subprocess.Popen([sys.executable, "-c", code, str(port)], stdout=subprocess.PIPE)
    keeper: subprocess.Popen[bytes] | None = None
    gets = Load(port, "hello.localhost", "/id", fresh=2)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"listening\n"
        gets.start()  # waiting in the holder's backlog
        argv = [sys.executable, "-m", "roost", "--data", str(tmp_path), "router-keeper"]
        log = tmp_path / "keeper.log"
        keeper = started([*argv, "--port", str(port), "--tls-port", "0", "--take-over"], log)
        await until(lambda: " serving http on " in log.read_text(), "the keeper's router")
        holder.kill()  # (the requests waiting in its backlog move to the keeper's socket)
        holder.wait()
        await until(lambda: gets.result.total >= 100, "load through the keeper's router")
        result = await asyncio.to_thread(gets.stop)
        assert result.failures == [], result.failures[:5]
        keeper.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(keeper.wait, 60) == 0, log.read_text()
    finally:
        await asyncio.to_thread(gets.stop)
        for p in (holder, keeper):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        await ctl.stop()
