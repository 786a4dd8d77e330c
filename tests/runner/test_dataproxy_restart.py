"""A runner restart keeps apps' database connections (issues 16 and 20).

The runner daemon runs as a real process (against the fake controller of
test_daemon) with a data proxy listener in DATA/dataproxy.json in front of
a fake primary. A connection opened through the proxy is still served after
the daemon hands over (SIGUSR2) and after its successor, which adopts the
same HAProxy, reloads it for a second listener; a full stop (SIGTERM) of
the successor stops HAProxy and so cuts the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from roost.images.store import ImageStore
from roost.runner.dataproxy import HAPROXY, LISTENERS_FILE, ProxyListener, encode_listeners
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.keys import generate_keypair, write_keypair
from roost.wire.node import Node
from roost.wire.rpc import RpcServer
from tests.conftest import free_port
from tests.runner.dataproxykit import echo, members, running
from tests.runner.helpers import FakeController, eventually, runner_argv, short_data_dir

pytestmark = pytest.mark.skipif(not Path(HAPROXY).exists(), reason="haproxy is not installed")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with short_data_dir() as d:
        yield d


@asynccontextmanager
async def controller(data: Path, tmp: Path) -> AsyncIterator[None]:
    """A fake controller the runners heartbeat to (they need one to start)."""
    runner_kp, ctrl_kp = generate_keypair(), generate_keypair()
    write_keypair(data / "keys", "runner", runner_kp)
    write_keypair(data / "keys", "controller", ctrl_kp)
    fake = FakeController(ImageStore(tmp / "store"))
    async with Node(ctrl_kp, [runner_kp.public]) as node:
        ctrl = RpcServer(node, "tcp://127.0.0.1:*", fake.handle)
        server = asyncio.create_task(ctrl.serve())
        endpoint = [Endpoint(ctrl.address, ctrl_kp.public_text)]
        ClusterConfig(endpoints={"controller": endpoint, "images": endpoint}).save(
            data / "cluster.json"
        )
        try:
            yield
        finally:
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)


def start_runner(data: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ROOST_HEARTBEAT_S": "0.5", "ROOST_METRICS_PORT": str(free_port())}
    with open(log, "ab") as out:
        return subprocess.Popen(runner_argv(data), env=env, stdout=out, stderr=out)


def bound(config: Path, port: int) -> str:
    """The address the runner's data proxy listens on for `port` (its own
    setting: a loopback address)."""
    found = re.search(rf"^\s*bind (\S+):{port}$", config.read_text(), re.M)
    assert found, config.read_text()
    return found.group(1).strip("[]")


async def greeting(host: str, port: int) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection(host, port)
    return (await asyncio.wait_for(r.readline(), 5)).decode().strip(), r, w


async def lands_on(config: Path, port: int, name: str) -> str:
    """Wait until a connection to the proxy's `port` greets as `name`; the
    proxy's address."""
    seen = ""

    async def reached() -> bool:
        nonlocal seen
        with contextlib.suppress(OSError, TimeoutError, AssertionError):
            seen, _, w = await greeting(bound(config, port), port)
            w.close()
        return seen == name

    deadline = asyncio.get_running_loop().time() + 60
    while not await reached():
        assert asyncio.get_running_loop().time() < deadline, (
            f"{port} never reached {name}: {seen!r}"
        )
        await asyncio.sleep(0.2)
    return bound(config, port)


async def stopped(runner: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    runner.send_signal(sig)
    return await asyncio.to_thread(runner.wait, 60)


async def test_a_runner_restart_keeps_connections_through_the_data_proxy(
    data_dir: Path,
    tmp_path: Path,
) -> None:
    one, two = free_port(), free_port()
    log = tmp_path / "runner.log"
    pidfile = data_dir / "runner" / "dataproxy" / "haproxy.pid"
    config = pidfile.with_name("haproxy.cfg")
    runners: list[subprocess.Popen[bytes]] = []
    master = 0
    async with members() as (a, b), controller(data_dir, tmp_path):
        a.primary = b.primary = True
        first = ProxyListener("postgres", "one", one, (("127.0.0.1", a.port, a.rest_port),))
        second = ProxyListener("postgres", "two", two, (("127.0.0.1", b.port, b.rest_port),))
        (data_dir / LISTENERS_FILE).write_bytes(encode_listeners([first]))
        try:
            runners.append(start_runner(data_dir, log))
            host = await lands_on(config, one, "a")
            master = int(pidfile.read_text().split()[0])
            _, r, w = await greeting(host, one)
            assert await echo(r, w, "before") == "a:before"

            # Hand-over: the daemon exits, HAProxy and the connection stay.
            assert await stopped(runners[0], signal.SIGUSR2) == 0
            assert running(master)
            assert await echo(r, w, "between") == "a:between"

            # The successor adopts it and reloads it for a new listener.
            runners.append(start_runner(data_dir, log))
            said = f"data proxy adopted (pid {master})"
            await eventually(lambda: said in log.read_text(), timeout=60, what="adopted")
            (data_dir / LISTENERS_FILE).write_bytes(encode_listeners([first, second]))
            await lands_on(config, two, "b")
            assert int(pidfile.read_text().split()[0]) == master
            assert await echo(r, w, "after") == "a:after"

            # A full stop of the runner stops its data proxy.
            assert await stopped(runners[1], signal.SIGTERM) == 0
            assert not running(master)
            assert await asyncio.wait_for(r.read(), 10) == b""
            w.close()
        except BaseException:
            print(log.read_text())
            proxy_log = pidfile.with_name("haproxy.log")
            print(proxy_log.read_text() if proxy_log.exists() else "(no haproxy.log)")
            with contextlib.suppress(OSError, ValueError):
                master = master or int(pidfile.read_text().split()[0])
            raise
        finally:
            for runner in runners:
                if runner.poll() is None:
                    runner.kill()
                    runner.wait()
            if master and running(master):
                os.kill(master, signal.SIGKILL)  # a failed test leaves nothing behind
