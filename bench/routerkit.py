"""The router benchmark's parts (bench/router.py): the load generator (wrk)
and what it reports, the proxies under test (nginx, HAProxy, roost's router
with a fake controller on real CURVE sockets), the process-CPU readings,
and the summaries the figures are printed with (a spread, per-round
ratios). The rounds are in routerrounds.py, the run and what it prints in
router.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.identity import ensure_member, identity
from roost.wire.messages import (
    AppRoute,
    Backend,
    Msg,
    Ok,
    RouteDelta,
    RouteSnapshot,
    RouteSnapshotRequest,
)
from roost.wire.node import Node
from roost.wire.pubsub import Publisher
from roost.wire.rpc import RpcServer

HOST = "127.0.0.1"
APP = "bench"
N_APPS = 3000
SPARES = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def ensure_tools() -> None:
    missing = [t for t in ("nginx", "haproxy", "wrk") if shutil.which(t) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(
            f"bench: missing {', '.join(missing)}; install them (apt-get install nginx haproxy wrk)"
        )
    print(f"installing {' '.join(missing)} from the OS packages...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "nginx", "haproxy", "wrk"], check=True, env=env
    )


async def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, w = await asyncio.open_connection(HOST, port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


# ---------------------------------------------------------------- wrk


@dataclass
class Load:
    rps: float
    p99_ms: float
    requests: int
    failed: int
    p50_ms: float = 0.0
    cpu_us: float = 0.0  # CPU time of the proxying process per request
    user_us: float = 0.0  # the user-space part of it (the system part is the same syscalls)
    cpus: float = 0.0  # CPUs the proxying processes used over the round (worker rounds)
    busy_pct: float = 0.0  # the whole machine's CPU busy over the round (worker rounds)


def spread(values: list[float]) -> str:
    """Lowest, quartiles and highest of a few rounds' figures, and how many."""
    if len(values) < 2:
        return f"{values[0]:.3f} (1 round)" if values else "no rounds"
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (
        f"min {min(values):.3f} q1 {q1:.3f} median {q2:.3f} q3 {q3:.3f}"
        f" max {max(values):.3f} ({len(values)} rounds)"
    )


def per_round(
    results: dict[str, list[Load]], a: str, b: str, f: Callable[[Load, Load], float]
) -> list[float]:
    """f over each round's two loads: a round's two targets ran back to back."""
    return [f(x, y) for x, y in zip(results[a], results[b], strict=True)]


def per_burst(
    bursts: dict[str, list[tuple[float, float]]],
    f: Callable[[tuple[float, float], tuple[float, float]], float],
) -> list[float]:
    """f over each round's roost and nginx_idle1s bursts."""
    return [f(r, n) for r, n in zip(bursts["roost"], bursts["nginx_idle1s"], strict=True)]


# wrk's command prefix: with --pin, `taskset -c 0` (set once in main).
WRK_PREFIX: list[str] = []


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of a process onto these CPUs (sched_setaffinity is per
    thread: the router's ZeroMQ threads would stay anywhere with the pid alone)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cpus)


def cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def user(p: psutil.Process) -> float:
    return float(p.cpu_times().user)


def worker_of(ng: Nginx) -> psutil.Process:
    assert ng.proc is not None
    kids = psutil.Process(ng.proc.pid).children()
    return kids[0] if kids else psutil.Process(ng.proc.pid)


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    value = float(m.group(1))
    return {"us": value / 1000, "ms": value, "s": value * 1000, "m": value * 60_000}[m.group(2)]


async def wrk(
    port: int,
    host: str,
    seconds: float,
    conns: int = 50,
    threads: int = 1,
    script: Path | None = None,
) -> Load:
    extra = ["-s", str(script)] if script is not None else []
    proc = await asyncio.create_subprocess_exec(
        *WRK_PREFIX, "wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds:.0f}s", "--latency",
        *extra, "-H", f"Host: {host}", f"http://{HOST}:{port}/",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    text = out.decode()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    # (anchored: "+/- Stdev" columns print values like "89.99%" too)
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    # Failed: non-2xx answers and every socket error (connect, read, write, timeout).
    failed = sum(
        int(x) for x in re.findall(r"(?:Non-2xx or 3xx responses:|, \w+|errors: \w+) (\d+)", text)
    )
    return Load(rps, p99, requests, failed, p50)


# ---------------------------------------------------------------- nginx and haproxy

NGINX_HEAD = (
    "worker_processes 1; daemon off; pid {dir}/{name}.pid; error_log {dir}/{name}-error.log;\n"
    "events {{ worker_connections 8192; }}\n"
)
BACKEND_CONF = (
    NGINX_HEAD.replace("{name}", "backend")
    + """http {{
  access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  server {{
    {listens}
    location / {{ default_type text/plain; return 200 "hello from the backend\\n"; }}
  }}
}}
"""
)
# Logs like the router does (buffered), keeps instance connections alive like it does.
PROXY_CONF = (
    NGINX_HEAD.replace("{name}", "proxy")
    + """http {{
  access_log {dir}/proxy-access.log combined buffer=256k flush=1s;
  keepalive_requests 10000000;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $host;
  proxy_set_header X-Forwarded-For $remote_addr;
  proxy_set_header X-Forwarded-Proto $scheme;
{upstreams}
{servers}
}}
"""
)

HAPROXY_CONF = """
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind {host}:{port}
  default_backend be
backend be
  server b1 {host}:{backend}
"""


def nginx_vhosts(
    n_apps: int, backend: int, spares: list[int], dead: int, live_spares: set[int]
) -> tuple[str, str]:
    ups, servers = [], []
    for i in range(n_apps):
        name = APP if i == 0 else f"app{i}"
        members = [backend, *sorted(live_spares)] if i == 0 else [dead + i % 50]
        body = "".join(f"    server {HOST}:{p};\n" for p in members)
        ups.append(f"  upstream u{i} {{\n{body}    keepalive 128;\n  }}\n")
        servers.append(
            f"  server {{ listen {HOST}:{{port}}; server_name {name}.localhost; "
            f"location / {{ proxy_pass http://u{i}; }} }}\n"
        )
    return "".join(ups), "".join(servers)


class Nginx:
    def __init__(self, workdir: Path, name: str) -> None:
        self.dir = workdir
        self.name = name
        self.conf = workdir / f"{name}.conf"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, text: str) -> None:
        self.conf.write_text(text)
        self.proc = subprocess.Popen(
            ["nginx", "-c", str(self.conf), "-p", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def reload(self, text: str) -> None:
        self.conf.write_text(text)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, signal.SIGQUIT)  # nginx's graceful stop


# ---------------------------------------------------------------- roost


def app_route(i: int, backend: int, live_spares: set[int], dead: int) -> AppRoute:
    if i == 0:
        ports = [backend, *sorted(live_spares)]
        return AppRoute(
            app=APP,
            hostnames=[f"{APP}.localhost"],
            backends=[Backend(instance_id=f"{APP}-{p}", host=HOST, port=p) for p in ports],
        )
    port = dead + (i % 50)
    return other_route(i, port, f"app{i}-{port}")


def other_route(i: int, port: int, instance_id: str) -> AppRoute:
    return AppRoute(
        app=f"app{i}",
        hostnames=[f"app{i}.localhost", f"www.app{i}.example"],
        backends=[Backend(instance_id=instance_id, host=HOST, port=port)],
    )


class FakeController:
    """Answers snapshot requests and publishes deltas, over real CURVE sockets."""

    def __init__(self, data: Path, routes: dict[str, AppRoute]) -> None:
        self.data = data
        self.routes = routes
        self.version = 1
        self.snapshot_requests = 0
        self.pub: Publisher | None = None

    async def _handle(self, msg: Msg) -> Msg:
        if isinstance(msg, RouteSnapshotRequest):
            self.snapshot_requests += 1
            return RouteSnapshot(version=self.version, routes=list(self.routes.values()))
        return Ok()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeController]:
        # Listed in peers.json with their roles: a router takes routes from
        # controllers' keys only (roost.wire.identity).
        ckey = ensure_member(self.data / "keys", "controller", identity("controller", "bench"))
        rkey = ensure_member(self.data / "keys", "router", identity("router", "bench"))
        rpc_addr, pub_addr = f"tcp://{HOST}:{free_port()}", f"tcp://{HOST}:{free_port()}"
        ClusterConfig(
            endpoints={
                "controller": [Endpoint(rpc_addr, ckey.public_text)],
                "controller-pub": [Endpoint(pub_addr, ckey.public_text)],
            }
        ).save(self.data / "cluster.json")
        async with Node(ckey, [rkey.public]) as node:
            server = RpcServer(node, rpc_addr, self._handle)
            self.pub = Publisher(node, pub_addr)
            task = asyncio.create_task(server.serve())
            try:
                yield self
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                self.pub.close()

    async def change(self, upserts: list[AppRoute]) -> None:
        base = self.version
        self.version += 1
        self.routes.update((r.app, r) for r in upserts)
        assert self.pub is not None
        delta = RouteDelta(base_version=base, version=self.version, upserts=upserts)
        await self.pub.publish("routes", delta)


def start_router(
    data: Path, port: int, workers: int = 1, src: Path | None = None
) -> subprocess.Popen[bytes]:
    """A router process; with `src`, the roost package from that src/ directory."""
    code = (
        "import logging; logging.basicConfig(level=logging.WARNING); "
        "from pathlib import Path; from roost.router.daemon import run; "
        "from roost.settings import Settings; "
        f"run(Path({str(data)!r}), Settings.from_env(), port={port}, workers={workers})"
    )
    env = dict(os.environ, ROOST_ROUTER_TLS_PORT="0")
    if src is not None:
        env["PYTHONPATH"] = str(src.resolve())
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
