"""Request counters for Prometheus and the dashboard, cheap on the hot path.

A request costs one dict lookup keyed by the app's label as raw bytes (whose
hash the bytes object keeps: no tuple to build and hash, no decoding, no
label formatting, no lock) and four increments of C integers when compiled
(`Row`: a list's items were Python ints, a new one made and the old freed
at each increment); a collector turns the counts into Prometheus metrics
when /metrics is scraped, and roost.router.report sends each app's to the
controllers for the charts (both read rows through `Row.values`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

# Upper bounds (seconds) of the latency histogram buckets.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))
# An app's row: requests by status class (status // 100: 0 to 9), then its
# requests by latency bucket.
CLASSES = 10
ROW = CLASSES + len(BUCKETS)
# (C integers when compiled, see stats.pxd: the per-request update then
# indexes its rows without Python arithmetic)
_TOP_CLASS = CLASSES - 1
_FIRST_BUCKET = CLASSES

try:
    import cython
except ImportError:  # (Cython is a build tool: the router runs as plain Python without it)
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)


class Row:
    """One app's counts (ROW of them, laid out as above). Compiled, a C array
    of 64-bit integers the extension type zeroes when it is made
    (stats.pxd); as plain Python, a list."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        if not cython.compiled:
            self.n = [0] * ROW

    def values(self) -> list[int]:
        """The counts as they stand, as Python ints (a copy)."""
        return [self.n[i] for i in range(ROW)]


class RequestCounts:
    """What a request updates (compiled with the request path: stats.pxd)."""

    __slots__ = ("apps", "every", "latency_sum")

    def __init__(self) -> None:
        # app label (bytes; b"" for no app) -> its row
        self.apps: dict[bytes, Row] = {}
        # every app's requests together (the histogram reads its buckets)
        self.every = Row()
        self.latency_sum = 0.0  # and their total time

    def record(self, app: bytes, status: int, seconds: float) -> None:
        row = self.apps.get(app)
        if row is None:
            row = self.apps[app] = Row()
        cls = status // 100
        if cls > _TOP_CLASS or cls < 0:  # (a C array has no bounds of its own)
            cls = _TOP_CLASS
        i = 0
        if seconds > 0.005:  # else the common case, without the loop
            while seconds > BUCKETS[i]:  # (the last bound is infinite)
                i += 1
        i += _FIRST_BUCKET
        every = self.every
        row.n[cls] += 1
        row.n[i] += 1
        every.n[cls] += 1
        every.n[i] += 1
        self.latency_sum += seconds

    def latency(self) -> list[int]:
        """Every app's requests by latency bucket."""
        return self.every.values()[_FIRST_BUCKET:]


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
        for app, row in list(counted.apps.items()):
            label = app.decode("latin-1") if app else "-"
            for cls, n in enumerate(row.values()[:CLASSES]):
                if n:
                    counts[(label, f"{cls}xx")] += n
        for (label, status), n in sorted(counts.items()):
            c.add_metric([label, status], n)
        yield c
        h = HistogramMetricFamily("roost_router_request_seconds", "Time to answer a request")
        cumulative, buckets = 0, []
        for bound, n in zip(BUCKETS, counted.latency(), strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
        h.add_metric([], buckets, counted.latency_sum)
        yield h
