"""The request counters (roost.router.stats, compiled with the request path):
what record() adds up, read back as Prometheus metrics and as the report the
controllers chart, against counts kept the plain way."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

from roost.router.report import REPORTED_CLASSES, router_stats
from roost.router.stats import BUCKETS, CLASSES, ROW, RequestCounts, RequestStats, Row


def bucket(seconds: float) -> int:
    return next(i for i, bound in enumerate(BUCKETS) if seconds <= bound)


def load(n: int) -> list[tuple[bytes, int, float]]:
    rng = random.Random(21)
    apps = [b"", b"shop", b"blog", *(b"app%d" % i for i in range(20))]
    statuses = (0, 101, 200, 204, 301, 404, 499, 502, 599, 600, 999, 1200)
    edges = [*BUCKETS[:-1], *(b + 1e-9 for b in BUCKETS[:-1]), 0.0, 60.0]
    out = []
    for _ in range(n):
        seconds = rng.choice(edges) if rng.random() < 0.3 else rng.expovariate(1 / 0.05)
        out.append((rng.choice(apps), rng.choice(statuses), seconds))
    return out


def test_counts_add_up_as_counted_plainly() -> None:
    """Per app: requests by status class (the tenth takes 900 and over) and
    by latency bucket (a bound belongs to its bucket); all apps' buckets and
    total time for the histogram."""
    counts = RequestCounts()
    classes: Counter[tuple[bytes, int]] = Counter()
    buckets: Counter[tuple[bytes, int]] = Counter()
    every: Counter[int] = Counter()
    total = 0.0
    requests = load(20000)
    for app, status, seconds in requests:
        counts.record(app, status, seconds)
        classes[(app, min(status // 100, CLASSES - 1))] += 1
        buckets[(app, bucket(seconds))] += 1
        every[bucket(seconds)] += 1
        total += seconds
    assert sorted(counts.apps) == sorted({a for a, _, _ in requests})
    for app, row in counts.apps.items():
        n = row.values()
        assert len(n) == ROW
        assert n[:CLASSES] == [classes[(app, c)] for c in range(CLASSES)]
        assert n[CLASSES:] == [buckets[(app, b)] for b in range(len(BUCKETS))]
    assert counts.latency() == [every[b] for b in range(len(BUCKETS))]
    assert abs(counts.latency_sum - total) < 1e-6 * total

    # As Prometheus reads them, and as the controllers get them.
    stats = RequestStats()
    stats.counts = counts
    requests_metric, histogram = stats.collect()
    got = {(s.labels["app"], s.labels["status"]): s.value for s in requests_metric.samples}
    want = {((a.decode() or "-"), f"{c}xx"): float(n) for (a, c), n in classes.items() if n}
    assert got == want
    cumulative = {s.labels["le"]: s.value for s in histogram.samples if s.name.endswith("_bucket")}
    assert cumulative["+Inf"] == len(requests)
    assert cumulative["0.005"] == every[0]
    msg = router_stats("r1", 0.0, counts)
    assert b"" not in {a.encode() for a in msg.requests}  # (no app: left out)
    assert msg.requests["shop"] == [classes[(b"shop", c)] for c in range(1, 1 + REPORTED_CLASSES)]
    assert msg.latency["blog"] == [buckets[(b"blog", b)] for b in range(len(BUCKETS))]


def test_a_row_starts_at_zero_and_is_read_as_a_copy() -> None:
    row = Row()
    assert row.values() == [0] * ROW
    counts = RequestCounts()
    counts.record(b"a", 200, 0.001)
    before = counts.apps[b"a"].values()
    counts.record(b"a", 200, 0.001)
    assert before[2] == 1 and counts.apps[b"a"].values()[2] == 2


def test_the_compiled_row_has_room_for_every_count() -> None:
    """stats.pxd sizes the C array by hand: it must be ROW (a smaller one
    would be written past its end when compiled)."""
    pxd = (Path(__file__).parents[2] / "src/roost/router/stats.pxd").read_text()
    sizes = re.findall(r"cdef long long n\[(\d+)\]", pxd)
    assert sizes == [str(ROW)]
