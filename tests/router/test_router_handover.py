"""Restarting the router fails no request: real router processes on listening
sockets handed over by socket activation (as `roost up` or a systemd .socket
unit hands them), under steady load (tests/e2e/load.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from roost.proc import activation
from roost.proc.exits import ExitCode
from tests.e2e.load import Load
from tests.router.conftest import app
from tests.router.test_daemon import route_feed

LIVENESS_S = 60.0  # (a bound on waiting for something that must happen, not a timing)


async def until(cond: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LIVENESS_S
    while not cond():
        assert loop.time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


class Router:
    """`roost router` on `sockets` (name, fd), its stderr in a file."""

    def __init__(self, data: Path, n: int, sockets: list[tuple[str, int]], workers: int = 1):
        self.log = data / f"router{n}.log"
        self.workers = workers
        argv = [sys.executable, "-m", "roost", "--data", str(data), "router"]
        env = dict(os.environ, ROOST_ROUTER_WORKERS=str(workers), ROOST_METRICS_PORT="0")
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                activation.launcher(sockets, argv),
                pass_fds=[fd for _, fd in sockets],
                env=env,
                stderr=err,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def serving(self) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, self.text()
            return self.text().count(" serving http on ") >= self.workers

        await until(up, f"{self.log.name} serving")

    async def ended(self) -> int:
        await until(lambda: self.proc.poll() is not None, f"{self.log.name} ended")
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def test_restarts_on_handed_over_sockets_fail_no_request(
    backends: Any, tmp_path: Path
) -> None:
    one = await backends("one")
    ctl = await route_feed(tmp_path, [app("hello", one)])
    http = socket.create_server(("127.0.0.1", 0), backlog=activation.BACKLOG)
    https = socket.create_server(("127.0.0.1", 0), backlog=activation.BACKLOG)
    sockets = [("http", http.fileno()), ("https", https.fileno())]
    port = http.getsockname()[1]
    routers: list[Router] = []
    # Keep-alive and fresh clients, GETs and POSTs with a body.
    gets = Load(port, "hello.localhost", "/id", keep_alive=3, fresh=2)
    posts = Load(port, "hello.localhost", "/echo", method="POST", body=b"x" * 3000, fresh=1)
    loads = (gets, posts)

    def answered() -> int:
        return sum(load.result.total for load in loads)

    async def more(n: int, what: str) -> None:
        target = answered() + n
        await until(lambda: answered() >= target, what)

    try:
        routers.append(first := Router(tmp_path, 1, sockets))
        await first.serving()
        for load in loads:
            load.start()
        await more(50, "load through the first router")

        # A successor starts on the same sockets; the first is told to end.
        routers.append(second := Router(tmp_path, 2, sockets))
        await second.serving()
        await more(50, "load through both")
        first.proc.send_signal(signal.SIGTERM)
        assert await first.ended() == 0, first.text()
        await more(50, "load through the second alone")

        # No successor running when the second ends: connections wait in the
        # sockets' backlog until the third (two workers this time) accepts them.
        second.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        routers.append(third := Router(tmp_path, 3, sockets, workers=2))
        assert await second.ended() == 0, second.text()
        await third.serving()
        await more(50, "load through the third")
        # (stopped from another thread: the instance answering them runs on this loop)
        results = [await asyncio.to_thread(load.stop) for load in loads]

        for r in results:
            assert r.failures == [], r.failures[:5]
            assert r.ok > 0 and r.bodies  # every request answered with a 200
        async with httpx.AsyncClient(verify=False) as c:
            resp = await c.get(
                f"https://127.0.0.1:{https.getsockname()[1]}/id",
                headers={"Host": "hello.localhost"},
            )
            assert resp.text == "one"  # the inherited https socket serves TLS

        # SIGUSR2 (hand over) ends it the same way; no worker is left behind.
        family = psutil.Process(third.proc.pid).children(recursive=True)
        assert len(family) >= 2
        third.proc.send_signal(signal.SIGUSR2)
        assert await third.ended() == 0, third.text()
        _, alive = psutil.wait_procs(family, timeout=10)
        assert alive == []
    finally:
        for load in loads:
            await asyncio.to_thread(load.stop)
        for r in routers:
            r.kill()
        await ctl.stop()
        http.close()
        https.close()


async def test_an_inherited_fd_that_does_not_listen_is_refused(tmp_path: Path) -> None:
    ctl = await route_feed(tmp_path, [])
    try:
        with socket.socket() as bound:
            bound.bind(("127.0.0.1", 0))  # (bound, but never listening)
            router = Router(tmp_path, 1, [("http", bound.fileno())])
            try:
                assert await router.ended() == ExitCode.CONFIG_ERROR
            finally:
                router.kill()
        last = router.text().strip().splitlines()[-1]
        assert last == (
            "router: inherited fd 3 ('http') is a TCP socket that does not listen "
            "(bind and listen first)"
        )
    finally:
        await ctl.stop()
