"""Router benchmark: roost's router against nginx and HAProxy, plain and under churn.

Not a test: it prints numbers. One run measures, one worker each and the same
backend (nginx serving a small response, so the backend is not the bottleneck):
  direct        wrk -> backend
  nginx         wrk -> nginx proxy -> backend
  haproxy       wrk -> HAProxy -> backend
  roost         wrk -> roost router -> backend
Each is measured in many short interleaved rounds (roost and nginx always
back to back, the order reversed every other round), since other work on the
machine moves single runs around: a ratio printed against nginx is the median
of the rounds' own ratios (each compares two loads a second apart, under the
same load of the moment), printed with its spread (lowest, quartiles, highest)
and the number of rounds; the rounds' requests/s, p99 and CPU are medians too.
CPU time per request is that of the proxying process, read from the kernel's
account of it (/proc/PID/stat, every thread: utime and stime) before and after
each round: steadier than requests/s on a shared machine.

`--pin` runs wrk and the backend on the first CPU and the proxy under test on
the second (every one of its threads; the same for nginx, HAProxy and roost),
so that the proxy does not compete with the load generator for its core. Off
by default: with wrk and the backend on one core, that core can become the
limit, and then requests/s measure it rather than the proxy (CPU per request
still measures the proxy).

CPU time is printed whole and in user space alone (the proxies make the same
syscalls; where they differ is user time). `--baseline SRC` adds a router
run from another checkout's src/ (built) to the same interleaved rounds and
prints this build's CPU per request against it: an A/B of two builds under
the same load, steadier on a busy machine than two separate runs.

Then nginx and roost paced (`--paced-rate`, 10,000 requests/s unless told):
the closed loop above serves as fast as each proxy can, so their p99s are
taken at different request rates (a proxy that serves more with the same
50 connections queues differently); paced, both get about the same rate,
below either's capacity, and their p50 and p99 compare like for like. wrk
has no open-loop mode (wrk2 is not packaged): its Lua `delay()` makes each
of 100 connections wait a random whole number of milliseconds (uniform,
mean 100 connections / rate) after each response before its next request,
and the latency wrk records excludes that wait. The rate each got is
printed beside them (it moves a little with the latency itself). A second
nginx proxy joins the paced rounds, `nginx_idle1s`: the same but closing an
instance connection idle as long as roost's router does
(ROOST_ROUTER_UPSTREAM_IDLE_S, 1 s; its `keepalive_timeout` in the upstream,
60 s unless set), since each proxy is idle for seconds between its rounds
and roost starts each with no pooled connection where nginx keeps its own.

Then a cold burst, nginx_idle1s and roost: after more than the instance
pool's idle time (so each holds no instance connection), 100 new client
connections send a request each at once; printed, the milliseconds to the
last answer and the proxy's CPU time over the burst (/proc/PID/task/*/schedstat),
medians of interleaved rounds, and the rounds' gap. This is what the start of
every paced round costs: its 100 connections' first requests are 1% of a
round's 10,000, so the paced p99 sits at their edge. Measured (issue 21,
eighth pass, load 4-6): such a burst took roost 12.8 ms to its last answer
with a cold pool and 4.4 ms with a warm one (nginx_idle1s 7.9 and 3.8;
medians of 6 rounds); in the router the cold burst's requests waited behind
garbage collections (five or six young and one middle collection per burst,
1-3 ms, set off by the connections' objects, 27 per client and instance
connection pair left in cycles) and a timer per connect (`asyncio.timeout`,
100 connects 4.3 ms with it, 2.9 without, the floor of raw sockets 2.9);
both are gone (roost.router.daemon.settle_gc, client.py's `_DEAD_PARSER`,
`Relay.connect_timeout`). Mid-round too: the router kept at most 64 idle
connections per instance, so spikes past 64 connected again (255-484
connects after a 5 s round's start against nginx_idle1s's 35-115); now
128, as this bench's nginx keeps. Ruled out as well, measured: threads waking the
router (idle, its main and ZeroMQ threads wake about 9 times a second each,
libuv's workers never) and its priority (nice 0, as nginx's worker); in
earlier passes the syscalls per request (strace: one read and one send on
each side, as nginx), Nagle (TCP_NODELAY on both sides) and garbage
collection in steady load. The pool is LIFO (`slot.idle.pop()`: a few hot
connections reused). Not explained: the closed loop's gap at p99 (its rounds
start with 50 cold connects too, but those are 0.1% of a round's requests).

Then roost with 1 and 2 worker processes (SO_REUSEPORT), wrk on two threads
for both, in interleaved rounds: the requests/s of each and their ratio, and
beside them the CPUs the router's processes got and how busy the machine was
(two workers serve more only if they get more CPU: on a machine whose cores
wrk, the backend and other work already fill, the ratio cannot show scaling).
So the same rounds again with each worker process held to a CPU budget of
its own (`--worker-cpus`, 0.35 of a CPU, by a cgroup's CPU quota:
bench/cpubudget.py), one budget for one worker and two for two, standing
for one core and two: `roost_2_vs_1_workers_budgeted` is what the router
does with a second core when it gets one (the kernel's SO_REUSEPORT spread
of connections over the workers, nothing shared between them that would
serialise them). Printed beside it: the CPUs each got and how long the
quota held them back (a budget that never held would measure the machine).

Then churn: 3000 apps, one under load, while a fake controller (real CURVE
sockets, the same messages a controller sends) publishes a route delta every
100 ms that adds and removes instances on other apps and on the loaded app's
spare instances (all live). Failed requests and throughput are compared with
the same setup without churn, in short alternating steady/churn pairs: the
ratio printed is the median of the pairs' ratios (adjacent phases share the
machine's load of the moment). Beside it, the pairs' ratios of the router's
CPU time per request steady and churning (`churn_cpu_ratio`: what applying
the deltas costs it, steadier than requests/s). The same for nginx with 3000
virtual hosts reloaded every 0.5 s (throughput only: its workers change at
every reload).

Installs nginx, haproxy and wrk from the OS packages when missing (as root).
`--quick` runs each load for a few seconds only. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from cpubudget import CpuBudget

from roost.settings import Settings
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


async def plain_rounds(
    targets: list[tuple[str, int]],
    procs: dict[str, psutil.Process],
    rounds: int,
    seconds: float,
    results: dict[str, list[Load]],
) -> None:
    """Every target once per round, the order reversed every other round."""
    for r in range(rounds):
        for name, port in targets if r % 2 == 0 else targets[::-1]:
            before, user_before = cpu(procs[name]), user(procs[name])
            load = await wrk(port, f"{APP}.localhost", seconds)
            n = max(1, load.requests)
            load.cpu_us = (cpu(procs[name]) - before) / n * 1e6
            load.user_us = (user(procs[name]) - user_before) / n * 1e6
            results[name].append(load)
            print(
                f"  round {r + 1} {name:8s} {load.rps:10.0f} req/s  p99 {load.p99_ms:6.2f} ms"
                f"  failed {load.failed}  cpu {load.cpu_us:5.1f} us/req"
                f" (user {load.user_us:4.1f})",
                flush=True,
            )


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


async def worker_rounds(
    ports: dict[str, int], procs: dict[str, list[psutil.Process]], rounds: int, seconds: float
) -> dict[str, list[Load]]:
    """Roost with one worker and with two, alternately, wrk on two threads for
    both (one wrk thread alone may not load two workers). Each round also
    records the CPUs the router's processes used and how busy the whole
    machine was: two workers can serve more only if they get more CPU, which
    a machine whose cores wrk, the backend and other work already fill does
    not give them."""
    results: dict[str, list[Load]] = {name: [] for name in ports}
    names = list(ports)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            before = sum(cpu(p) for p in procs[name])
            started = time.monotonic()
            psutil.cpu_percent()  # (starts the machine-wide interval)
            load = await wrk(ports[name], f"{APP}.localhost", seconds, threads=2)
            load.busy_pct = psutil.cpu_percent()
            used = sum(cpu(p) for p in procs[name]) - before
            load.cpus = used / (time.monotonic() - started)
            load.cpu_us = used / max(1, load.requests) * 1e6
            results[name].append(load)
            print(
                f"  round {r + 1} {name:9s} {load.rps:10.0f} req/s  p99 {load.p99_ms:6.2f} ms"
                f"  failed {load.failed}  cpu {load.cpu_us:5.1f} us/req"
                f"  router cpus {load.cpus:4.2f}  machine busy {load.busy_pct:3.0f}%",
                flush=True,
            )
    return results


@dataclass
class Budgeted:
    """The budgeted worker rounds and how long the quota held each group back."""

    loads: dict[str, list[Load]]
    throttled_s: dict[str, float]


async def budgeted_worker_rounds(
    ports: dict[str, int],
    one: psutil.Process,
    supervisor: psutil.Process,
    cpus: float,
    rounds: int,
    seconds: float,
) -> Budgeted | str:
    """The worker rounds again, each worker process held to `cpus` of a CPU
    by a cgroup of its own (bench/cpubudget.py): one worker, one budget; two
    workers, two. Two cores shared with wrk and the backend cannot give two
    workers more CPU than one, so this is what shows whether throughput grows
    with the cores the router is given (each budget standing for a core): the
    SO_REUSEPORT spread over workers, and nothing shared between them that
    would serialise them. A string says why it could not run (not root, no
    CPU controller)."""
    workers = supervisor.children()
    groups = {"1 worker": [one], "2 workers": workers}
    try:
        with contextlib.ExitStack() as stack:
            budgets: dict[str, list[CpuBudget]] = {}
            for name, members in groups.items():
                budgets[name] = []
                for i, p in enumerate(members):
                    b = stack.enter_context(CpuBudget(f"{name[0]}w{i}", cpus))
                    b.add(p.pid)
                    budgets[name].append(b)
            before = {n: sum(b.throttled_s() for b in bs) for n, bs in budgets.items()}
            loads = await worker_rounds(
                {"1 worker": ports["roost"], "2 workers": ports["roost2"]},
                {"1 worker": [one], "2 workers": workers},
                rounds,
                seconds,
            )
            held = {n: sum(b.throttled_s() for b in bs) - before[n] for n, bs in budgets.items()}
    except (OSError, RuntimeError) as e:
        return f"no CPU budget: {e}"
    return Budgeted(loads, held)


def print_budgeted(budgeted: Budgeted, cpus: float) -> None:
    one = statistics.median(x.rps for x in budgeted.loads["1 worker"])
    two = statistics.median(x.rps for x in budgeted.loads["2 workers"])
    print(f"roost_1_worker_budgeted_rps: {one:.0f} (each worker held to {cpus} CPU)")
    print(f"roost_2_workers_budgeted_rps: {two:.0f}")
    print(f"roost_2_vs_1_workers_budgeted: {two / one:.3f}")
    # (the CPUs each got, and how long the quota held them back: a budget
    # that never held would measure the machine, not the workers)
    for label, key in (("1_worker", "1 worker"), ("2_workers", "2 workers")):
        got = statistics.median(x.cpus for x in budgeted.loads[key])
        print(
            f"roost_{label}_budgeted_cpus: {got:.2f} (throttled {budgeted.throttled_s[key]:.1f} s)"
        )


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


PACED_CONNS = 100


def paced_script(work: Path, rate: float) -> Path:
    """A wrk script pacing each of PACED_CONNS connections to about `rate`
    requests/s in all: a random think time after each response, whole
    milliseconds (wrk's timers), uniform around the mean, so the connections
    do not fall into step. wrk's latency excludes the think time."""
    mean_ms = max(1, round(PACED_CONNS * 1000 / rate))
    path = work / "paced.lua"
    path.write_text(f"function delay()\n  return math.random(0, {2 * mean_ms})\nend\n")
    return path


async def paced_rounds(
    targets: list[tuple[str, int]], script: Path, rounds: int, seconds: float
) -> dict[str, list[Load]]:
    """The targets paced to one rate, back to back, the order reversed every
    other round: p50 and p99 at the same request rate."""
    results: dict[str, list[Load]] = {name: [] for name, _ in targets}
    for r in range(rounds):
        for name, port in targets if r % 2 == 0 else targets[::-1]:
            load = await wrk(port, f"{APP}.localhost", seconds, PACED_CONNS, script=script)
            results[name].append(load)
            print(
                f"  round {r + 1} {name:8s} {load.rps:10.0f} req/s  p50 {load.p50_ms:6.2f} ms"
                f"  p99 {load.p99_ms:6.2f} ms  failed {load.failed}",
                flush=True,
            )
    return results


BURST = 100


def cpu_ns(pid: int) -> int:
    """Time every thread of a process has run, in ns (schedstat: finer than
    /proc/PID/stat's ticks, which a 10 ms burst would not see)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    return total


def burst_once(port: int, host: str, n: int = BURST) -> float:
    """`n` new client connections, then one request on each sent at once:
    milliseconds from the first send to the last complete answer. Blocking
    sockets and a selector, run in a thread (the bench's loop stays idle)."""
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    socks = [socket.create_connection((HOST, port)) for _ in range(n)]
    time.sleep(0.05)  # (accepted before the clock starts)
    try:
        with selectors.DefaultSelector() as sel:
            got: dict[socket.socket, bytes] = {}
            for s in socks:
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ)
                got[s] = b""
            started = time.perf_counter()
            for s in socks:
                s.sendall(request)
            left = n
            while left:
                events = sel.select(10)
                if not events:
                    raise RuntimeError(f"burst: {left} of {n} requests unanswered after 10 s")
                for key, _ in events:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    data = sock.recv(65536)
                    if not data:
                        raise RuntimeError("burst: a connection closed before its answer")
                    got[sock] += data
                    head, sep, body = got[sock].partition(b"\r\n\r\n")
                    m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
                    if sep and m and len(body) >= int(m.group(1)):
                        if not head.startswith(b"HTTP/1.1 200"):
                            raise RuntimeError(f"burst: answered {head[:40]!r}")
                        sel.unregister(sock)
                        left -= 1
            return (time.perf_counter() - started) * 1000
    finally:
        for s in socks:
            s.close()


async def burst_rounds(
    targets: list[tuple[str, int, int]], rounds: int, idle_s: float
) -> dict[str, list[tuple[float, float]]]:
    """Each target (name, port, pid of its proxying process) takes BURST new
    connections with a request each at once, after `idle_s` idle (so its
    instance pool has closed what it held: each request needs a new instance
    connection, as at the start of every paced round), the order reversed
    every other round: (ms to the last answer, proxy CPU ms) per round."""
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in targets}
    for r in range(rounds):
        for name, port, pid in targets if r % 2 == 0 else targets[::-1]:
            await asyncio.sleep(idle_s)
            before = cpu_ns(pid)
            ms = await asyncio.to_thread(burst_once, port, f"{APP}.localhost")
            cpu_ms = (cpu_ns(pid) - before) / 1e6
            results[name].append((ms, cpu_ms))
            print(
                f"  round {r + 1} {name:12s} last answer {ms:6.2f} ms  proxy cpu {cpu_ms:5.2f} ms",
                flush=True,
            )
    return results


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


# ---------------------------------------------------------------- the run


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="a few seconds per load")
    ap.add_argument(
        "--baseline",
        metavar="SRC",
        type=Path,
        help="also measure a router from another checkout's src/ (built), in the same "
        "interleaved plain rounds: an A/B of two builds under the same load",
    )
    ap.add_argument(
        "--rounds", type=int, help="plain and worker rounds (default 8 of 1 s, quick; 10 of 3 s)"
    )
    ap.add_argument(
        "--paced-rate",
        type=float,
        default=10_000.0,
        help="requests/s of the paced nginx and roost rounds (p50/p99 at one rate)",
    )
    ap.add_argument(
        "--worker-cpus",
        type=float,
        default=0.35,
        help="the CPU budget of each router worker in the budgeted 1-and-2-worker rounds",
    )
    ap.add_argument(
        "--pin",
        action="store_true",
        help="wrk and the backend on CPU 0, the proxy under test on CPU 1 (each alike)",
    )
    args = ap.parse_args()
    if not 100 <= args.paced_rate <= 1_000_000:
        sys.exit("bench: --paced-rate is requests/s, between 100 and 1000000")
    if not 0.05 <= args.worker_cpus <= 4:
        sys.exit("bench: --worker-cpus is a share of one CPU, between 0.05 and 4")
    if args.pin and (psutil.cpu_count() or 1) < 2:
        sys.exit("bench: --pin needs two CPUs")
    if args.baseline is not None and not (args.baseline / "roost" / "router").is_dir():
        sys.exit(f"bench: {args.baseline} is not a src/ directory with roost/router in it")
    # More, shorter rounds rather than fewer long ones: medians of interleaved
    # rounds are what holds still when the shared machine's load moves (wrk
    # takes whole seconds; 1 s is some 50,000 requests here).
    seconds = 1.0 if args.quick else 3.0
    rounds = args.rounds or (8 if args.quick else 10)
    # Churn: many short steady/churn pairs; each pair's ratio compares two
    # adjacent phases, so drift in the machine's load cancels within a pair.
    # 1 s phases either way (some 50,000 requests each): the closer in time
    # a pair's two phases, the more of the machine's moving load they share;
    # more pairs make the median steadier (10 pairs of 3 s printed medians
    # from 0.89 to 1.00 for a router whose CPU per request did not move).
    churn_seconds = 1.0
    pairs = 10 if args.quick else 24
    if args.pin:
        WRK_PREFIX[:] = ["taskset", "-c", "0"]
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="roost-bench-"))
    backend = free_port()
    spares = [free_port() for _ in range(SPARES)]
    dead = 1  # privileged low ports nothing listens on: never hit (only the loaded app is)
    ports = {
        name: free_port()
        for name in ("nginx", "haproxy", "roost", "roost2", "base", "nginx_idle1s")
    }
    backend_ng = Nginx(work, "backend")
    proxy_ng = Nginx(work, "proxy")
    # (its own directory: the proxy config names its pid and log files)
    idle_ng = Nginx(work / "idle1s", "proxy")
    haproxy: subprocess.Popen[bytes] | None = None
    router: subprocess.Popen[bytes] | None = None
    router2: subprocess.Popen[bytes] | None = None
    base: subprocess.Popen[bytes] | None = None
    names = ("direct", "nginx", "haproxy", "roost", *(("base",) if args.baseline else ()))
    results: dict[str, list[Load]] = {k: [] for k in names}
    try:
        listens = "".join(f"listen {HOST}:{p};\n    " for p in (backend, *spares))
        backend_ng.start(BACKEND_CONF.format(dir=work, listens=listens))
        await wait_port(backend)
        ups, servers = nginx_vhosts(1, backend, spares, dead, set())
        proxy_ng.start(
            PROXY_CONF.format(
                dir=work, upstreams=ups, servers=servers.replace("{port}", str(ports["nginx"]))
            )
        )
        # nginx closing idle instance connections when roost's router does.
        idle_ms = round(Settings.from_env().router_upstream_idle_s * 1000)
        idle_ng.dir.mkdir()
        idle_ng.start(
            PROXY_CONF.format(
                dir=idle_ng.dir,
                upstreams=ups.replace(
                    "keepalive 128;\n", f"keepalive 128;\n    keepalive_timeout {idle_ms}ms;\n"
                ),
                servers=servers.replace("{port}", str(ports["nginx_idle1s"])),
            )
        )
        (work / "haproxy.cfg").write_text(
            HAPROXY_CONF.format(host=HOST, port=ports["haproxy"], backend=backend)
        )
        haproxy = subprocess.Popen(
            ["haproxy", "-f", str(work / "haproxy.cfg")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        data = work / "roost"
        data.mkdir()
        routes = {APP: app_route(0, backend, set(), dead)}
        async with FakeController(data, routes).running() as ctl:
            router = start_router(data, ports["roost"])
            if args.baseline is not None:
                base = start_router(data, ports["base"], src=args.baseline)
            for name, p in ports.items():
                if name != "roost2" and (name != "base" or base is not None):
                    await wait_port(p)
            await wrk(ports["roost"], f"{APP}.localhost", 1)  # warm up every path once
            if base is not None:
                await wrk(ports["base"], f"{APP}.localhost", 1)
            await wrk(ports["nginx"], f"{APP}.localhost", 1)
            await wrk(ports["nginx_idle1s"], f"{APP}.localhost", 1)
            # nginx and roost (and the baseline) back to back in every round.
            targets = [
                ("direct", backend),
                ("haproxy", ports["haproxy"]),
                ("nginx", ports["nginx"]),
                ("roost", ports["roost"]),
            ]
            # The process doing the proxying, to report its CPU time per request
            # (steadier than req/s when other work shares the machine).
            procs = {
                "direct": worker_of(backend_ng),
                "nginx": worker_of(proxy_ng),
                "haproxy": psutil.Process(haproxy.pid),
                "roost": psutil.Process(router.pid),
            }
            if base is not None:
                targets.append(("base", ports["base"]))
                procs["base"] = psutil.Process(base.pid)
            if args.pin:
                # The backend serves every target: it stays with wrk, and the
                # proxy under test has the other core (while it is not under
                # test it idles there).
                pin(procs["direct"].pid, {0})
                for name in ("nginx", "haproxy", "roost", "base"):
                    if name in procs:
                        pin(procs[name].pid, {1})
            await plain_rounds(targets, procs, rounds, seconds, results)
            print(f"paced, nginx and roost (about {args.paced_rate:.0f} req/s):", flush=True)
            paced = await paced_rounds(
                [
                    ("nginx_idle1s", ports["nginx_idle1s"]),
                    ("nginx", ports["nginx"]),
                    ("roost", ports["roost"]),
                ],
                paced_script(work, args.paced_rate),
                rounds,
                seconds,
            )
            print(
                f"burst, nginx_idle1s and roost ({BURST} new connections at once, "
                f"after {idle_ms / 1000 + 0.5:.1f} s idle):",
                flush=True,
            )
            bursts = await burst_rounds(
                [
                    ("nginx_idle1s", ports["nginx_idle1s"], worker_of(idle_ng).pid),
                    ("roost", ports["roost"], router.pid),
                ],
                rounds,
                idle_ms / 1000 + 0.5,  # (roost's sweep closes them within 0.25 s of it)
            )
            if args.pin:
                # Workers and churn unpinned: two workers need both cores.
                WRK_PREFIX.clear()
                for p in procs.values():
                    with contextlib.suppress(psutil.NoSuchProcess):
                        pin(p.pid, set(range(psutil.cpu_count() or 1)))
            if base is not None:
                stop(base)
                base = None
            print("workers, roost (wrk on 2 threads):", flush=True)
            router2 = start_router(data, ports["roost2"], workers=2)
            await wait_port(ports["roost2"])
            await wrk(ports["roost2"], f"{APP}.localhost", 1, threads=2)  # both workers warm
            supervisor = psutil.Process(router2.pid)
            scaling = await worker_rounds(
                {"1 worker": ports["roost"], "2 workers": ports["roost2"]},
                {"1 worker": [procs["roost"]], "2 workers": [supervisor, *supervisor.children()]},
                rounds,
                seconds,
            )
            print(f"workers, roost, each held to {args.worker_cpus} CPU (a cgroup's quota):")
            budgeted = await budgeted_worker_rounds(
                ports, procs["roost"], supervisor, args.worker_cpus, rounds, seconds
            )
            stop(router2)
            router2 = None
            print("churn, roost:", flush=True)
            churn = await roost_churn(
                ctl, ports["roost"], procs["roost"], backend, spares, dead, churn_seconds, pairs
            )
        stop(router)
        router = None
        proxy_ng.stop()
        print("churn, nginx (reloads):", flush=True)
        nginx_churn = await nginx_reload_churn(
            proxy_ng, ports["nginx"], backend, spares, dead, churn_seconds, pairs
        )
    finally:
        for proc in (router, router2, base):
            if proc is not None:
                stop(proc)
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait()
        proxy_ng.stop()
        idle_ng.stop()
        backend_ng.stop()
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(x.rps for x in v) for k, v in results.items()}
    p99 = {k: statistics.median(x.p99_ms for x in v) for k, v in results.items()}
    print()
    cpu_med = {k: statistics.median(x.cpu_us for x in v) for k, v in results.items()}
    print(
        "cpu per request (us): "
        + ", ".join(f"{k} {v:.1f}" for k, v in cpu_med.items())
        + " (direct = the backend itself)"
    )
    user_med = {k: statistics.median(x.user_us for x in v) for k, v in results.items()}
    print("user cpu per request (us): " + ", ".join(f"{k} {v:.1f}" for k, v in user_med.items()))
    print(
        f"churn: roost {churn.steady:.0f} req/s steady, {churn.churn:.0f} req/s under churn, "
        f"{churn.changes} deltas applied, {churn.snapshots} snapshot requests "
        "(the router re-checks its version every 15 s)"
    )
    print(
        f"churn: nginx {nginx_churn.steady:.0f} req/s steady, {nginx_churn.churn:.0f} req/s "
        f"reloading, {nginx_churn.changes} reloads"
    )
    print(f"direct_rps: {med['direct']:.0f}")
    print(f"nginx_rps: {med['nginx']:.0f}")
    print(f"haproxy_rps: {med['haproxy']:.0f}")
    print(f"roost_rps: {med['roost']:.0f}")
    # Ratios against nginx (and the baseline): the median of the rounds' own
    # ratios, each from two loads run back to back; the spread beside it says
    # how far one round can be trusted on this machine.
    ratios = {
        "roost_vs_nginx": per_round(results, "roost", "nginx", lambda r, n: r.rps / n.rps),
        # (>= 1.0: roost spends no more CPU per request than nginx)
        "roost_vs_nginx_cpu": per_round(
            results, "roost", "nginx", lambda r, n: n.cpu_us / r.cpu_us
        ),
        "roost_vs_nginx_user_cpu": per_round(
            results, "roost", "nginx", lambda r, n: n.user_us / r.user_us
        ),
    }
    if "base" in results:
        # (> 1.0: this build spends less CPU per request than the baseline's)
        ratios["roost_vs_baseline_cpu"] = per_round(
            results, "roost", "base", lambda r, b: b.cpu_us / r.cpu_us
        )
        ratios["roost_vs_baseline_user_cpu"] = per_round(
            results, "roost", "base", lambda r, b: b.user_us / r.user_us
        )
    for key, values in ratios.items():
        print(f"{key}: {statistics.median(values):.3f}")
        print(f"{key}_spread: {spread(values)}")
    print(f"roost_p99_ms: {p99['roost']:.2f}")
    print(f"nginx_p99_ms: {p99['nginx']:.2f}")
    # (<= 0.5: the target; a round's two p99s are a second apart)
    p99_gap = per_round(results, "roost", "nginx", lambda r, n: r.p99_ms - n.p99_ms)
    print(f"roost_minus_nginx_p99_ms: {statistics.median(p99_gap):.2f}")
    print(f"roost_minus_nginx_p99_ms_spread: {spread(p99_gap)}")
    # The same two paced to one rate (closed-loop p99s above are at each
    # one's own rate): medians of the rounds, the gap per round.
    for name in ("roost", "nginx", "nginx_idle1s"):
        rows = paced[name]
        print(f"{name}_paced_rps: {statistics.median(x.rps for x in rows):.0f}")
        print(f"{name}_paced_p50_ms: {statistics.median(x.p50_ms for x in rows):.2f}")
        print(f"{name}_paced_p99_ms: {statistics.median(x.p99_ms for x in rows):.2f}")
    paced_gap = per_round(paced, "roost", "nginx", lambda r, n: r.p99_ms - n.p99_ms)
    print(f"roost_minus_nginx_paced_p99_ms: {statistics.median(paced_gap):.2f}")
    print(f"roost_minus_nginx_paced_p99_ms_spread: {spread(paced_gap)}")
    # (nginx closing idle instance connections after the router's 1 s)
    idle_gap = per_round(paced, "roost", "nginx_idle1s", lambda r, n: r.p99_ms - n.p99_ms)
    print(f"roost_minus_nginx_idle1s_paced_p99_ms: {statistics.median(idle_gap):.2f}")
    print(f"roost_minus_nginx_idle1s_paced_p99_ms_spread: {spread(idle_gap)}")
    # A cold burst (every request needing a new instance connection): what
    # the start of every paced round costs each proxy, in time and CPU.
    for name in ("roost", "nginx_idle1s"):
        burst = bursts[name]
        print(f"{name}_burst_last_ms: {statistics.median(ms for ms, _ in burst):.2f}")
        print(f"{name}_burst_cpu_ms: {statistics.median(c for _, c in burst):.2f}")
    burst_gap = per_burst(bursts, lambda r, n: r[0] - n[0])
    print(f"roost_minus_nginx_idle1s_burst_ms: {statistics.median(burst_gap):.2f}")
    print(f"roost_minus_nginx_idle1s_burst_ms_spread: {spread(burst_gap)}")
    burst_cpu = per_burst(bursts, lambda r, n: r[1] / n[1])
    print(f"roost_vs_nginx_idle1s_burst_cpu: {statistics.median(burst_cpu):.3f}")
    print(f"pinned: {'wrk and backend on CPU 0, proxy on CPU 1' if args.pin else 'no'}")
    one = statistics.median(x.rps for x in scaling["1 worker"])
    two = statistics.median(x.rps for x in scaling["2 workers"])
    print(f"roost_1_worker_rps: {one:.0f}")
    print(f"roost_2_workers_rps: {two:.0f}")
    print(f"roost_2_vs_1_workers: {two / one:.3f}")
    # What the ratio can show here: the CPUs the router got with each, and
    # how busy the machine was (near 100%, more workers get no more CPU).
    for label, key in (("1_worker", "1 worker"), ("2_workers", "2 workers")):
        print(f"roost_{label}_cpus: {statistics.median(x.cpus for x in scaling[key]):.2f}")
    busy = statistics.median(x.busy_pct for v in scaling.values() for x in v)
    print(f"machine_busy_pct_during_workers: {busy:.0f} (of {psutil.cpu_count()} CPUs)")
    if isinstance(budgeted, str):
        print(f"roost_2_vs_1_workers_budgeted: n/a ({budgeted})")
    else:
        print_budgeted(budgeted, args.worker_cpus)
    print(f"churn_failed_requests: {churn.failed}")
    print(f"churn_throughput_ratio: {statistics.median(churn.ratios):.3f}")
    print(f"churn_throughput_ratio_spread: {spread(churn.ratios)}")
    # (>= 1.0: no more router CPU per request under churn than steady)
    print(f"churn_cpu_ratio: {statistics.median(churn.cpu_ratios):.3f}")
    print(f"churn_cpu_ratio_spread: {spread(churn.cpu_ratios)}")
    print(f"nginx_reload_failed_requests: {nginx_churn.failed}")
    print(f"nginx_reload_throughput_ratio: {statistics.median(nginx_churn.ratios):.3f}")


@dataclass
class Churn:
    steady: float  # median requests/s without changes
    churn: float  # median requests/s while changing
    ratios: list[float]  # each pair's churn/steady
    failed: int
    changes: int  # deltas applied, or reloads
    snapshots: int = 0  # snapshot requests the router made
    # each pair's steady/churn CPU per request of the router (roost only)
    cpu_ratios: list[float] = field(default_factory=list)


async def _repeat(
    step: Callable[[], Awaitable[None]], interval: float, halt: asyncio.Event
) -> None:
    while not halt.is_set():
        await step()
        await asyncio.sleep(interval)


async def alternate(
    port: int,
    seconds: float,
    pairs: int,
    step: Callable[[], Awaitable[None]],
    interval: float,
    settle: float = 0.0,
    proc: psutil.Process | None = None,
) -> tuple[float, float, list[float], int, list[float]]:
    """Steady and churning loads in alternation (the order flips each pair, so
    drifting background load hits both alike); churn runs `step` every
    `interval`. Returns (median steady rps, median churn rps, the pairs'
    churn/steady ratios, failed requests, and with `proc` (the proxying
    process) the pairs' steady/churn ratios of its CPU time per request:
    what churn costs it, steadier than requests/s on a shared machine)."""
    rates: dict[str, list[float]] = {"steady": [], "churn": []}
    cpus: dict[str, list[float]] = {"steady": [], "churn": []}
    failed = 0
    for k in range(pairs):
        for phase in ("steady", "churn") if k % 2 == 0 else ("churn", "steady"):
            halt = asyncio.Event()
            task = asyncio.create_task(_repeat(step, interval, halt)) if phase == "churn" else None
            before = cpu(proc) if proc is not None else 0.0
            load = await wrk(port, f"{APP}.localhost", seconds)
            if task is not None:
                halt.set()
                await task
            if proc is not None:  # (the last step's delta counted: it is churn's work)
                cpus[phase].append((cpu(proc) - before) / max(1, load.requests) * 1e6)
            if task is not None:
                await asyncio.sleep(settle)
            rates[phase].append(load.rps)
            failed += load.failed  # a failure without churn counts too
            print(f"  {phase:6s} {load.rps:10.0f} req/s  failed {load.failed}", flush=True)
    ratios = [c / s for c, s in zip(rates["churn"], rates["steady"], strict=True)]
    cpu_ratios = [s / c for c, s in zip(cpus["churn"], cpus["steady"], strict=True)]
    steady, churning = statistics.median(rates["steady"]), statistics.median(rates["churn"])
    return steady, churning, ratios, failed, cpu_ratios


async def roost_churn(
    ctl: FakeController,
    port: int,
    proc: psutil.Process,
    backend: int,
    spares: list[int],
    dead: int,
    seconds: float,
    pairs: int,
) -> Churn:
    rng = random.Random(5)
    # 3000 apps: one delta carries them all in (the router applies it without a stop).
    await ctl.change([app_route(i, backend, set(), dead) for i in range(1, N_APPS)])
    probe = f"app{N_APPS - 1}.localhost"
    await wait_served(port, probe, expect_status=502)  # its instance is dead: 502 proves the route
    live: set[int] = set()
    deltas = 0

    async def step() -> None:
        nonlocal deltas
        # Other apps: a new instance replaces the old one (added and removed).
        others = [
            other_route(i, dead + rng.randrange(50), f"app{i}-{rng.randrange(10**9)}")
            for i in rng.sample(range(1, N_APPS), 20)
        ]
        live.symmetric_difference_update({rng.choice(spares)})  # a live spare comes or goes
        await ctl.change([app_route(0, backend, live, dead), *others])
        deltas += 1

    steady, churning, ratios, failed, cpu_ratios = await alternate(
        port, seconds, pairs, step, 0.1, proc=proc
    )
    # Prove the deltas were applied, not dropped: a brand-new app answers.
    late = Backend(instance_id="late", host=HOST, port=backend)
    await ctl.change([AppRoute(app="latecomer", hostnames=[], backends=[late])])
    await wait_served(port, "latecomer.localhost", expect_status=200)
    return Churn(steady, churning, ratios, failed, deltas, ctl.snapshot_requests, cpu_ratios)


async def wait_served(port: int, host: str, expect_status: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            line = await reader.readline()
            writer.close()
            if line.startswith(f"HTTP/1.1 {expect_status}".encode()):
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{host} never answered {expect_status}: the route table did not arrive")


async def nginx_reload_churn(
    ng: Nginx, port: int, backend: int, spares: list[int], dead: int, seconds: float, pairs: int
) -> Churn:
    rng = random.Random(7)

    def conf(live: set[int]) -> str:
        ups, servers = nginx_vhosts(N_APPS, backend, spares, dead, live)
        return PROXY_CONF.format(
            dir=ng.dir, upstreams=ups, servers=servers.replace("{port}", str(port))
        )

    ng.start(conf(set()))
    await wait_port(port)
    live: set[int] = set()
    reloads = 0

    async def step() -> None:
        nonlocal reloads
        live.symmetric_difference_update({rng.choice(spares)})
        ng.reload(conf(live))
        reloads += 1

    # (settle: the last reload's old workers finish before a steady phase)
    steady, churning, ratios, failed, _ = await alternate(
        port, seconds, pairs, step, 0.5, settle=1.0
    )
    ng.stop()
    return Churn(steady, churning, ratios, failed, reloads)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
