"""Request counters for Prometheus, cheap on the hot path.

A request costs one dict update keyed by raw values (no decoding, no label
formatting, no lock); a collector turns the counts into Prometheus metrics
when /metrics is scraped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

# Upper bounds (seconds) of the latency histogram buckets.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))


class RequestCounts:
    """What a request updates (compiled with the request path: stats.pxd)."""

    __slots__ = ("app_latency", "latency", "latency_sum", "requests")

    def __init__(self) -> None:
        # (app label as bytes, status // 100) -> count; labels are made when scraped
        self.requests: dict[tuple[bytes, int], int] = {}
        self.latency = [0] * len(BUCKETS)
        self.latency_sum = 0.0
        # (app label, bucket index) -> count: each app's latency, for the
        # dashboard's percentiles (roost.router.report sends them on)
        self.app_latency: dict[tuple[bytes, int], int] = {}

    def record(self, app: bytes, status: int, seconds: float) -> None:
        key = (app, status // 100)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency_sum += seconds
        i = 0
        if seconds > 0.005:  # else the common case, without the loop
            while seconds > BUCKETS[i]:  # (the last bound is infinite)
                i += 1
        self.latency[i] += 1
        key = (app, i)
        self.app_latency[key] = self.app_latency.get(key, 0) + 1


class RequestStats(Collector):
    """The counts as Prometheus metrics (registered once per worker)."""

    def __init__(self) -> None:
        self.counts = RequestCounts()  # (the request path updates these directly)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        c = CounterMetricFamily(
            "roost_router_requests", "Requests answered", labels=["app", "status"]
        )
        counts: defaultdict[tuple[str, str], int] = defaultdict(int)
        counted = self.counts
        for (app, cls), n in list(counted.requests.items()):
            counts[(app.decode("latin-1") if app else "-", f"{cls}xx")] += n
        for (label, status), n in sorted(counts.items()):
            c.add_metric([label, status], n)
        yield c
        h = HistogramMetricFamily("roost_router_request_seconds", "Time to answer a request")
        cumulative, buckets = 0, []
        for bound, n in zip(BUCKETS, counted.latency, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
        h.add_metric([], buckets, counted.latency_sum)
        yield h
