"""Request counters for Prometheus, cheap on the hot path.

A request costs one dict update (no label lookup, no lock); a collector turns
the counts into Prometheus metrics when /metrics is scraped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

# Upper bounds (seconds) of the latency histogram buckets.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))


class RequestStats(Collector):
    def __init__(self) -> None:
        # (app, status class) -> count
        self.requests: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.latency = [0] * len(BUCKETS)
        self.latency_sum = 0.0

    def record(self, app: bytes, status: int, seconds: float) -> None:
        self.requests[(app.decode("latin-1") if app else "-", f"{status // 100}xx")] += 1
        self.latency_sum += seconds
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.latency[i] += 1
                break

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        c = CounterMetricFamily(
            "roost_router_requests", "Requests answered", labels=["app", "status"]
        )
        for (app, status), n in sorted(self.requests.items()):
            c.add_metric([app, status], n)
        yield c
        h = HistogramMetricFamily("roost_router_request_seconds", "Time to answer a request")
        cumulative, buckets = 0, []
        for bound, n in zip(BUCKETS, self.latency, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
        h.add_metric([], buckets, self.latency_sum)
        yield h
