"""The router daemon as the platform runs it: a real process, several workers on
one port (SO_REUSEPORT), routes from a controller, clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil

from roost.proc.exits import ExitCode
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.identity import identity, save_peers
from roost.wire.keys import generate_keypair, write_keypair
from roost.wire.messages import AppRoute
from tests.router.conftest import app
from tests.router.test_feed import FakeController, free_port


def router_workers(pid: int) -> list[psutil.Process]:
    """The worker processes (`roost router --worker N`)."""
    out = []
    for p in psutil.Process(pid).children():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "--worker" in p.cmdline():
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


async def route_feed(data: Path, routes: list[AppRoute]) -> FakeController:
    """A controller, started, that feeds `routes` to routers run on `data`
    (their keys, peers and cluster.json written there)."""
    ckey, rkey = generate_keypair(), generate_keypair()
    write_keypair(data / "keys", "controller", ckey)
    write_keypair(data / "keys", "router", rkey)
    # The router takes route tables only from a key it knows as a controller's.
    save_peers(
        data / "keys",
        {ckey.public: identity("controller", "local"), rkey.public: identity("router", "local")},
    )
    ctl = FakeController(ckey, rkey.public, free_port(), free_port())
    ctl.routes = {r.app: r for r in routes}
    await ctl.start()
    ClusterConfig(
        endpoints={
            "controller": [Endpoint(ctl.rpc_addr, ckey.public_text)],
            "controller-pub": [Endpoint(ctl.pub_addr, ckey.public_text)],
        }
    ).save(data / "cluster.json")
    return ctl


async def test_daemon_with_two_workers(backends: Any, tmp_path: Path) -> None:
    one = await backends("one")
    ctl = await route_feed(tmp_path, [app("hello", one)])
    port, tls_port = free_port(), free_port()
    env = dict(os.environ, ROOST_ROUTER_TLS_PORT=str(tls_port), ROOST_ROUTER_WORKERS="2")
    code = (
        "from pathlib import Path; from roost.router.daemon import run; "
        "from roost.settings import Settings; "
        f"run(Path({str(tmp_path)!r}), Settings.from_env(), port={port})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        async with httpx.AsyncClient() as c:
            for _ in range(200):
                try:
                    r = await c.get(
                        f"http://127.0.0.1:{port}/id", headers={"Host": "hello.localhost"}
                    )
                    if r.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
            assert r.text == "one"
            workers = router_workers(proc.pid)
            assert len(workers) == 2
            # Both workers serve (each has its own table): every fresh connection succeeds.
            for _ in range(20):
                async with httpx.AsyncClient() as fresh:
                    resp = await fresh.get(
                        f"http://127.0.0.1:{port}/id", headers={"Host": "hello.localhost"}
                    )
                    assert resp.text == "one"
            async with httpx.AsyncClient(verify=False) as tls:
                resp = await tls.get(
                    f"https://127.0.0.1:{tls_port}/id", headers={"Host": "hello.localhost"}
                )
                assert resp.text == "one"
            # A worker that dies is replaced.
            os.kill(workers[0].pid, signal.SIGKILL)
            for _ in range(200):
                kids = router_workers(proc.pid)
                if len(kids) == 2 and workers[0].pid not in [k.pid for k in kids]:
                    break
                await asyncio.sleep(0.05)
            everything = psutil.Process(proc.pid).children(recursive=True)
            workers = router_workers(proc.pid)
            assert len(workers) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        _, alive = psutil.wait_procs(everything, timeout=10)
        assert alive == []  # no orphans
        log = (tmp_path / "router" / "access.log").read_text()
        # (lines buffered in the killed worker are lost; the others are flushed on stop)
        assert log.count('"GET /id HTTP/1.1" 200') >= 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await ctl.stop()


def test_port_in_use_fails_clearly(tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ckey = generate_keypair()
        write_keypair(tmp_path / "keys", "router", ckey)
        ClusterConfig(endpoints={}).save(tmp_path / "cluster.json")
        for workers in (1, 2):
            code = (
                "from pathlib import Path; from roost.router.daemon import run; "
                "from roost.settings import Settings; "
                f"run(Path({str(tmp_path)!r}), Settings.from_env(), port={port}, workers={workers})"
            )
            env = dict(os.environ, ROOST_ROUTER_TLS_PORT="0")
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
            )
            # A named status a supervisor does not restart it after (roost.proc.exits).
            assert out.returncode == ExitCode.UNAVAILABLE, out.stderr
            last = out.stderr.strip().splitlines()[-1]
            assert last.startswith(f"router: cannot bind 127.0.0.1:{port}"), out.stderr
