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
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
from routerkit import (
    APP,
    BACKEND_CONF,
    HAPROXY_CONF,
    HOST,
    PROXY_CONF,
    SPARES,
    WRK_PREFIX,
    FakeController,
    Load,
    Nginx,
    app_route,
    ensure_tools,
    free_port,
    nginx_vhosts,
    per_burst,
    per_round,
    pin,
    spread,
    start_router,
    stop,
    wait_port,
    worker_of,
    wrk,
)
from routerrounds import (
    BURST,
    budgeted_worker_rounds,
    burst_rounds,
    nginx_reload_churn,
    paced_rounds,
    paced_script,
    plain_rounds,
    print_budgeted,
    roost_churn,
    worker_rounds,
)

from roost.settings import Settings

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


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
