"""Failover benchmark (issue 9): host death, partitions, and a controller at scale.

With the multi-host harness of tests/cluster (network namespaces as hosts,
real daemons: 2 controllers, 3 runners, 1 router, 1 builder, PostgreSQL;
root required), examples/hello deployed with two web instances:

  failover_s                       host killed (processes and network gone at
                                   once) -> the route again has two web
                                   backends, none on the dead host (median)
  failover_failed_requests         requests through the router (3 clients, back
                                   to back) started from the kill until then
                                   that got no 200 (sum)
  max_copies_routed                partition a runner holding a web instance,
                                   let its work move, heal it: the most copies
                                   of one instance (same app, type, index) in
                                   any route table the controllers published,
                                   or in use at once per the router's access
                                   log (max over runs; 1 is right)
  stale_copy_stopped_after_heal_s  heal -> every process of the stale copy
                                   gone (median)

Then the scale run (bench/failover_scale.py): one controller, simulated
runners (--runners, default 200) carrying --instances (default 10,000):

  heartbeat_cpu_share  controller CPU seconds per wall second, steady state
  heartbeats_per_s     heartbeats it answered a second meanwhile (one a runner
                       when the simulator keeps up)
  reconcile_ms         mean full reconcile pass while a silent host's
                       instances are moved
  heartbeat_p99_ms     a runner's heartbeat round trip, 99th percentile over
                       the run past the controller's start-up (its first full
                       pass, steady, a host lost; see bench/failover_scale.py)
  heartbeat_max_ms     the same, worst

and the same again with every state-database statement slowed by
--db-latency-ms (default 100) with --latency-runners (default 200):
heartbeats must still be answered within a second, since no coroutine waits
on the database to answer one.

  heartbeat_p99_ms_with_100ms_db_latency, heartbeat_max_ms_with_100ms_db_latency,
  heartbeats_unanswered_with_100ms_db_latency, reconcile_ms_with_100ms_db_latency

The issue's reference points: Nomad replaces a silent client's work after
about 20 s by default, Kubernetes after about 350 s; Roost's grace period is
5 s. Printed last, in this order: failover_s, failover_failed_requests,
max_copies_routed, stale_copy_stopped_after_heal_s, scale_runners,
scale_instances, heartbeat_cpu_share, heartbeats_per_s, reconcile_ms,
heartbeat_p99_ms, heartbeat_max_ms, then the latency run's figures.

`--quick`: one run of each incident and a shorter scale window (~3 minutes).
`--scale-only`: skip the namespace cluster. `--db-latency-ms 0`: no latency run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import psutil  # noqa: E402
from failover_scale import run_scale  # noqa: E402
from tests.cluster.cluster import RoostCluster, wait_for  # noqa: E402
from tests.cluster.harness import Host, skip_reason  # noqa: E402
from tests.cluster.observe import (  # noqa: E402
    RouteWatcher,
    Traffic,
    copy_key,
    max_copies_at_once,
    routed_instances,
)

APP = "hello"
TEXT = "Hello from Roost!"


def say(msg: str) -> None:
    print(f"# {msg}", flush=True)


def web(w: RouteWatcher) -> tuple[tuple[str, str], ...]:
    return tuple(b for b in w.backends(APP) if copy_key(b[0]).startswith(f"{APP}-web-"))


def healthy(rc: RoostCluster, w: RouteWatcher) -> None:
    for h in rc.net.hosts.values():
        if not any(p.poll() is None for p in h.procs):
            rc.boot(h)
    for ctl in rc.controllers:
        wait_for(lambda: len(rc.hosts_up(ctl)) == len(rc.runners), 60, "every runner up")  # noqa: B023
    wait_for(lambda: len(web(w)) == 2, 60, "two web backends")
    wait_for(lambda: rc.serving(APP, TEXT), 30, "hello served")


def victim_with_web(rc: RoostCluster) -> tuple[Host, dict[str, Any]]:
    hosts = rc.host_ids()
    inst = next(
        i
        for i in rc.api("GET", f"/api/apps/{APP}/ps")
        if i["process_type"] == "web" and i["state"] == "up"
    )
    return hosts[inst["host_id"]], inst


def kill_run(rc: RoostCluster, w: RouteWatcher) -> tuple[float, int]:
    healthy(rc, w)
    victim, inst = victim_with_web(rc)
    vid = inst["host_id"]
    with Traffic(rc.router_url(), f"{APP}.localhost") as traffic:
        time.sleep(1.0)
        killed = time.monotonic()
        rc.power_off(victim)
        done = wait_for(
            lambda: len(b := web(w)) == 2 and all(h != vid for _, h in b), 60, "capacity"
        )
        assert done
        restored = next(
            s.at
            for s in w.since(killed)
            if s.at >= killed
            and len(b := [x for x in s.backends.get(APP, ()) if "-web-" in x[0]]) == 2
            and all(h != vid for _, h in b)
        )
    # (Counted once every client has finished its last request.) Requests
    # started from the kill until capacity was back; one in flight on the dead
    # host at the kill has nobody left to answer it and is not counted.
    failed = len([o for o in traffic.failures(killed) if o.at <= restored])
    total = traffic.count(killed) - traffic.count(restored)
    rc.boot(victim)
    say(f"kill: capacity back after {restored - killed:.2f}s; {failed}/{total} requests failed")
    return restored - killed, failed


def partition_run(rc: RoostCluster, w: RouteWatcher) -> tuple[int, float]:
    healthy(rc, w)
    victim, inst = victim_with_web(rc)
    vid = inst["host_id"]
    master = psutil.Process(int(inst["pid"]))
    stale = [master, *master.children(recursive=True)]
    log = rc.routers[0].data / "router" / "access.log"
    offset = log.stat().st_size if log.exists() else 0
    with Traffic(rc.router_url(), f"{APP}.localhost"):
        time.sleep(1.0)
        cut = time.monotonic()
        rc.net.partition(victim)
        wait_for(lambda: len(b := web(w)) == 2 and all(h != vid for _, h in b), 60, "moved")
        time.sleep(0.5)
        healed = time.monotonic()
        rc.net.heal(victim)
        wait_for(lambda: not any(p.is_running() for p in stale), 30, "stale stop", interval=0.02)
        stopped = time.monotonic() - healed
        time.sleep(1.5)
    time.sleep(1.0)  # the router flushes its access log every half second
    copies = max(
        w.max_copies(APP, since=cut), max_copies_at_once(routed_instances(log, APP, offset))
    )
    say(f"partition: stale copy stopped {stopped:.2f}s after the heal; max copies routed {copies}")
    return copies, stopped


def chaos(runs: int) -> tuple[float, int, int, float]:
    base = Path(tempfile.mkdtemp(prefix="roost-bench-failover-"))
    try:
        with RoostCluster(base) as rc:
            say(f"cluster up on {rc.net.subnet}.0/24; deploying {APP}")
            rc.deploy(APP, REPO / "examples" / "hello")
            with RouteWatcher(rc.observer_data) as w:
                kills = [kill_run(rc, w) for _ in range(runs)]
                parts = [partition_run(rc, w) for _ in range(runs)]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return (
        statistics.median(k[0] for k in kills),
        sum(k[1] for k in kills),
        max(p[0] for p in parts),
        statistics.median(p[1] for p in parts),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one run each, shorter scale window")
    ap.add_argument("--runners", type=int, default=200)
    ap.add_argument("--instances", type=int, default=10_000)
    ap.add_argument("--db-latency-ms", type=float, default=100.0)
    ap.add_argument("--latency-runners", type=int, default=200)
    ap.add_argument("--scale-only", action="store_true", help="skip the namespace cluster")
    args = ap.parse_args()
    runs = 1 if args.quick else 3
    reason = "--scale-only" if args.scale_only else skip_reason()
    if reason:
        say(f"skipping the namespace cluster: {reason}")
        figures: tuple[float, int, int, float] = (float("nan"), -1, -1, float("nan"))
    else:
        figures = chaos(runs)
    window = 10.0 if args.quick else 30.0
    scale = run_scale(args.runners, args.instances, window, say)
    slow = None
    if args.db_latency_ms > 0:
        say(f"scale again, every state query {args.db_latency_ms:.0f} ms late")
        slow = run_scale(
            args.latency_runners,
            args.latency_runners * 50,
            window,
            say,
            db_latency_ms=args.db_latency_ms,
        )
    failover_s, failed, copies, stale_s = figures
    print(f"failover_s: {failover_s:.2f}")
    print(f"failover_failed_requests: {failed}")
    print(f"max_copies_routed: {copies}")
    print(f"stale_copy_stopped_after_heal_s: {stale_s:.2f}")
    print(f"scale_runners: {scale.runners}")
    print(f"scale_instances: {scale.instances}")
    print(f"heartbeat_cpu_share: {scale.cpu_share:.3f}")
    print(f"heartbeats_per_s: {scale.beats_per_s:.0f}")
    print(f"reconcile_ms: {scale.reconcile_ms:.1f}")
    print(f"heartbeat_p99_ms: {scale.beat_p99_ms:.0f}")
    print(f"heartbeat_max_ms: {scale.beat_max_ms:.0f}")
    if slow is not None:
        late = f"with_{args.db_latency_ms:.0f}ms_db_latency"
        print(f"heartbeat_p99_ms_{late}: {slow.beat_p99_ms:.0f}")
        print(f"heartbeat_max_ms_{late}: {slow.beat_max_ms:.0f}")
        print(f"heartbeats_unanswered_{late}: {slow.beats_missed}")
        print(f"reconcile_ms_{late}: {slow.reconcile_ms:.1f}")


if __name__ == "__main__":
    main()
