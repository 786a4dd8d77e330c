"""What feeds the charts: a router worker's per-app counters as a report, and
a runner's CPU time per instance tree."""

from __future__ import annotations

import subprocess
import sys

from roost.router.report import router_stats
from roost.router.stats import BUCKETS, RequestCounts, RequestStats
from roost.runner.heartbeat import tree_usage


def test_report_carries_each_apps_counts_and_latency() -> None:
    counts = RequestCounts()
    counts.record(b"shop", 200, 0.001)
    counts.record(b"shop", 200, 0.3)
    counts.record(b"shop", 503, 20.0)
    counts.record(b"blog", 404, 0.02)
    counts.record(b"", 404, 0.001)  # an unknown host: no app to chart it under
    msg = router_stats("r1/5", 123.0, counts)
    assert msg.source == "r1/5" and msg.started == 123.0
    assert msg.requests == {"shop": [0, 2, 0, 0, 1], "blog": [0, 0, 0, 1, 0]}
    shop = [0] * len(BUCKETS)
    shop[0], shop[BUCKETS.index(0.5)], shop[-1] = 1, 1, 1
    assert msg.latency["shop"] == shop
    assert msg.latency["blog"][BUCKETS.index(0.025)] == 1
    assert sum(counts.latency()) == 5  # the worker-wide histogram still counts everything


def test_prometheus_sees_the_same_counts() -> None:
    stats = RequestStats()
    stats.counts.record(b"shop", 200, 0.001)
    stats.counts.record(b"shop", 502, 0.3)
    stats.counts.record(b"", 404, 0.001)
    requests, latency = list(stats.collect())
    got = {(s.labels["app"], s.labels["status"]): s.value for s in requests.samples}
    assert got == {("shop", "2xx"): 1, ("shop", "5xx"): 1, ("-", "4xx"): 1}
    buckets = {s.labels["le"]: s.value for s in latency.samples if s.name.endswith("_bucket")}
    assert buckets["0.005"] == 2 and buckets["0.5"] == 3 and buckets["+Inf"] == 3


def test_cpu_time_of_a_process_tree_counts_its_children() -> None:
    # A parent whose child burned CPU and exited: the parent's tree carries
    # the child's time (a gunicorn worker replaced still counts).
    burn = (
        "import subprocess, sys;"
        "subprocess.run([sys.executable, '-c', 'sum(range(80_000_000))']);"
        "print('done', flush=True); input()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "done\n"
        mem, cpu = tree_usage([proc.pid, 0])[proc.pid]
        assert mem > 1 and cpu >= 0.2
        assert tree_usage([2**22 + 12345]) == {2**22 + 12345: (0.0, 0.0)}  # gone: nothing
    finally:
        proc.kill()
        proc.wait()
