"""The router benchmark's rounds (bench/router.py): plain, paced, cold
bursts, one and two workers (and each held to a CPU budget), steady
against churning. Each interleaves what it compares (see router.py's
docstring for why) and returns the loads; router.py prints the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import selectors
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from cpubudget import CpuBudget
from routerkit import (
    APP,
    HOST,
    N_APPS,
    PROXY_CONF,
    FakeController,
    Load,
    Nginx,
    app_route,
    cpu,
    nginx_vhosts,
    other_route,
    user,
    wait_port,
    wrk,
)

from roost.wire.messages import (
    AppRoute,
    Backend,
)


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
