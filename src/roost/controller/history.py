"""Bounded time series for the dashboard's charts, kept by every controller.

Theory of operation. Two inputs reach every controller replica already:
runner heartbeats (memory and CPU time of each instance) and router workers'
`RouterStats` (cumulative request counts by status class and a latency
histogram, per app). Each is folded into two tiers of fixed buckets: 10 s
points for the last hour and 5 min points for the last day, so an app costs
at most 360 + 288 points whatever the traffic, and a bucket is found by
integer division of the time, never searched for.

Counters arrive cumulative per router worker; a bucket gets the difference
from that worker's previous report (a worker with a new `started` begins
again from zero, so a restart never shows as negative traffic). Latency is
kept as histogram counts, summed over a bucket, and percentiles are read
from the sum as Prometheus's histogram_quantile does: a 5 min point's p99 is
the p99 of those 5 minutes, not an average of p99s.

Gauges (memory, CPU) are averaged over the bucket. CPU arrives as seconds of
CPU used, cumulative; its rate between two heartbeats of the same instance
is the load, in percent of one core.

Why here, in memory, rather than in the state database: every replica hears
every heartbeat and every router report, so each holds the same series with
no writes on the hot paths (a heartbeat is answered from memory); a replica
that restarts fills its charts again as reports arrive. Nothing here is
desired state, so nothing is lost that the platform needs.

Pure: every method takes the time; no clock, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from roost.wire.messages import Heartbeat, InstanceStatus, RouterStats

# Upper bounds (seconds) of the routers' latency buckets (roost.router.stats.BUCKETS).
LATENCY_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
PERCENTILES = (50, 95, 99)
# app -> (requests by status class, latency bucket counts), since a worker started
Cumulative = dict[str, tuple[list[int], list[int]]]


@dataclass(frozen=True)
class Tier:
    name: str
    step: int  # seconds per point
    points: int  # points kept


HOUR = Tier("hour", 10, 360)
DAY = Tier("day", 300, 288)
TIERS = {t.name: t for t in (HOUR, DAY)}
# Heartbeats come more often than a fine point: one sample per host per step
# is enough, and keeps a busy controller's heartbeat handler cheap.
SAMPLE_EVERY_S = HOUR.step
# A router worker first heard within this long of its start is counted from
# zero; one heard later only sets a baseline (see History.router).
FRESH_WORKER_S = 30.0


@dataclass
class Point:
    """What one bucket of one app has gathered."""

    requests: list[int] = field(default_factory=lambda: [0] * len(STATUS_CLASSES))
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BOUNDS))
    # instance label (instance_label) -> [sum, samples]
    memory: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)


def _add_gauge(gauges: dict[str, list[float]], key: str, value: float) -> None:
    acc = gauges.setdefault(key, [0.0, 0.0])
    acc[0] += value
    acc[1] += 1


def quantile(q: float, counts: list[int]) -> float | None:
    """The q-quantile (0..1) of a histogram over LATENCY_BOUNDS, interpolated
    linearly inside its bucket; None without observations. Past the last
    finite bound it answers that bound (the histogram knows no more)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for bound, n in zip(LATENCY_BOUNDS, counts, strict=True):
        if n and seen + n >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - seen) / n
        seen += n
        if bound != float("inf"):
            lower = bound
    return lower


class History:
    """Every app's recent series, in both tiers."""

    def __init__(self) -> None:
        # tier name -> app -> bucket index (time // step) -> point
        self._tiers: dict[str, dict[str, dict[int, Point]]] = {t: {} for t in TIERS}
        # router source -> (started, app -> (requests, latency), when) as last reported
        self._routers: dict[str, tuple[float, Cumulative, float]] = {}
        # instance -> (cpu seconds, wall time) at its previous sample
        self._cpu: dict[str, tuple[float, float]] = {}
        self._sampled: dict[str, float] = {}  # host -> when its heartbeat was last sampled
        self._expired_at = -1

    def _points(self, app: str, now: float) -> list[Point]:
        self._expire(now)
        out = []
        for name, tier in TIERS.items():
            series = self._tiers[name].setdefault(app, {})
            index = int(now // tier.step)
            point = series.get(index)
            if point is None:
                point = series[index] = Point()
                # A new bucket: drop those that fell out of the window (a
                # scan of at most `points` keys, once per step per app).
                for old in [i for i in series if i <= index - tier.points]:
                    del series[old]
            out.append(point)
        return out

    def router(self, msg: RouterStats, now: float) -> None:
        """Fold a router worker's cumulative counters in, as differences."""
        known = self._routers.get(msg.source)
        if known is not None and known[0] == msg.started:
            before = known[1]
        elif known is not None or now - msg.started <= FRESH_WORKER_S:
            before = {}  # a worker (re)started: its counters began again at 0
        else:
            # First heard long after it started (this controller is new):
            # its totals are days of traffic, not this bucket's. A baseline.
            self._routers[msg.source] = (msg.started, _cumulative(msg), now)
            return
        after = _cumulative(msg)
        for app, (requests, latency) in after.items():
            old_requests, old_latency = before.get(app, ([0] * len(requests), [0] * len(latency)))
            d_requests = [max(0, n - o) for n, o in zip(requests, old_requests, strict=True)]
            d_latency = [max(0, n - o) for n, o in zip(latency, old_latency, strict=True)]
            if not any(d_requests) and not any(d_latency):
                continue
            for point in self._points(app, now):
                point.requests = [a + b for a, b in zip(point.requests, d_requests, strict=True)]
                point.latency = [a + b for a, b in zip(point.latency, d_latency, strict=True)]
        self._routers[msg.source] = (msg.started, after, now)

    def heartbeat(self, hb: Heartbeat, now: float) -> None:
        """Sample a host's instances' memory and CPU, once per fine step."""
        last = self._sampled.get(hb.host_id)
        if last is not None and now - last < SAMPLE_EVERY_S:
            return
        self._sampled[hb.host_id] = now
        for st in hb.instances:
            if st.state != "up":
                self._cpu.pop(st.instance_id, None)
                continue
            points = self._points(st.app, now)
            label = instance_label(st)
            for point in points:
                _add_gauge(point.memory, label, st.memory_mb)
            prev = self._cpu.get(st.instance_id)
            self._cpu[st.instance_id] = (st.cpu_seconds, now)
            if prev is None or now <= prev[1] or st.cpu_seconds < prev[0]:
                continue  # no earlier sample of this process to measure from
            load = 100.0 * (st.cpu_seconds - prev[0]) / (now - prev[1])
            for point in points:
                _add_gauge(point.cpu, label, load)

    def _expire(self, now: float) -> None:
        """Once per fine step: forget apps nothing was heard of for a whole
        window (deleted, or idle), instances not sampled for a step, and
        router workers not heard for a day, so memory stays bounded by what
        is alive."""
        step = int(now // HOUR.step)
        if step == self._expired_at:
            return
        self._expired_at = step
        for name, tier in TIERS.items():
            series = self._tiers[name]
            oldest = int(now // tier.step) - tier.points
            for app in [a for a, points in series.items() if max(points, default=oldest) <= oldest]:
                del series[app]
        for inst in [i for i, (_, at) in self._cpu.items() if now - at > 2 * SAMPLE_EVERY_S]:
            del self._cpu[inst]
        for host in [h for h, at in self._sampled.items() if now - at > DAY.step]:
            del self._sampled[host]
        for source in [s for s, r in self._routers.items() if now - r[2] > DAY.points * DAY.step]:
            del self._routers[source]

    def series(self, app: str, tier_name: str, now: float) -> dict[str, Any]:
        """An app's series over a tier's window, one value per step, oldest
        first; None where nothing was heard (a gap, not a zero)."""
        tier = TIERS[tier_name]
        stored = self._tiers[tier_name].get(app, {})
        last = int(now // tier.step)
        indexes = range(last - tier.points + 1, last + 1)
        points = [stored.get(i) for i in indexes]
        instances = sorted({k for p in points if p for k in (*p.memory, *p.cpu)})
        # The newest bucket is still filling: its rate is over the part elapsed.
        spans = [float(tier.step)] * len(points)
        spans[-1] = max(1.0, now - last * tier.step)
        return {
            "tier": tier.name,
            "step": tier.step,
            "t": [i * tier.step for i in indexes],
            "rps": {
                cls: [
                    None if p is None else round(p.requests[k] / span, 3)
                    for p, span in zip(points, spans, strict=True)
                ]
                for k, cls in enumerate(STATUS_CLASSES)
            },
            "latency_ms": {
                f"p{q}": [_ms(quantile(q / 100, p.latency)) if p else None for p in points]
                for q in PERCENTILES
            },
            "memory_mb": {
                i: [_mean(p.memory.get(i)) if p else None for p in points] for i in instances
            },
            "cpu_percent": {
                i: [_mean(p.cpu.get(i)) if p else None for p in points] for i in instances
            },
        }


def instance_label(st: InstanceStatus) -> str:
    """How a chart names an instance: `web.1 v3` from its id
    (`APP-TYPE-INDEX-vRELEASE-RANDOM`, roost.controller.scheduler), else the
    id itself. Instances that follow each other in a slot share the label,
    and so one line."""
    rest = st.instance_id.removeprefix(f"{st.app}-")
    m = _INSTANCE.fullmatch(rest)
    return f"{m['ptype']}.{m['idx']} v{m['release']}" if m else st.instance_id


_INSTANCE = re.compile(r"(?P<ptype>.+)-(?P<idx>\d+)-v(?P<release>\d+)-[0-9a-f]+")


def _cumulative(msg: RouterStats) -> Cumulative:
    return {
        app: (
            _fit(msg.requests.get(app, []), len(STATUS_CLASSES)),
            _fit(msg.latency.get(app, []), len(LATENCY_BOUNDS)),
        )
        for app in set(msg.requests) | set(msg.latency)
    }


def _fit(values: list[int], n: int) -> list[int]:
    """Exactly n non-negative counts (a report from another version may differ)."""
    return [max(0, int(v)) for v in values[:n]] + [0] * max(0, n - len(values))


def _mean(acc: list[float] | None) -> float | None:
    return round(acc[0] / acc[1], 2) if acc and acc[1] else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)
