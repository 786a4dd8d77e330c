"""Bounded time series for the dashboard's charts, kept by every controller.

Theory of operation. Two inputs reach every controller replica already:
runner heartbeats (memory and CPU time of each instance) and router workers'
`RouterStats` (cumulative request counts by status class and a latency
histogram, per app). Each is folded into two tiers of fixed buckets: 10 s
points for the last hour and 5 min points for the last day. Each tier of
each app is a ring of flat arrays (`Ring`), a slot per point reused round
the ring, so an app costs a fixed few tens of kilobytes whatever the
traffic (about 45 KiB for its requests and latency, 10 KiB per instance),
and a point is found by integer division of the time, never searched for.

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
from array import array
from dataclasses import dataclass
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


NO_POINT = -1
COUNT_MAX = 2**32 - 1
CLASSES, BOUNDS = len(STATUS_CLASSES), len(LATENCY_BOUNDS)


class Ring:
    """One tier of one app: `tier.points` slots used round-robin, slot
    `i % points` holding point `i` (a bucket index, time // step) when
    `stamp` says so, else nothing yet or a point gone out of the window.
    Request counts and latency histograms are flat arrays (CLASSES and
    BOUNDS numbers a slot), made at the app's first request; each gauge
    series (memory or CPU of an instance) a flat array of (sum, samples)."""

    __slots__ = ("gauges", "last", "latency", "requests", "stamp", "tier", "touched")

    def __init__(self, tier: Tier) -> None:
        self.tier = tier
        self.stamp = array("q", [NO_POINT]) * tier.points
        self.last = NO_POINT  # the newest point written
        self.requests: array[int] | None = None
        self.latency: array[int] | None = None
        # (metric, instance label) -> [sum, samples] per slot
        self.gauges: dict[tuple[str, str], array[float]] = {}
        self.touched: dict[tuple[str, str], int] = {}  # gauge -> its newest point

    def slot(self, index: int) -> int:
        """The slot of point `index`, emptied first if it held an older one."""
        i = index % self.tier.points
        if self.stamp[i] != index:
            self.stamp[i] = index
            for counts, width in ((self.requests, CLASSES), (self.latency, BOUNDS)):
                if counts is not None:
                    counts[i * width : (i + 1) * width] = array("I", [0]) * width
            for values in self.gauges.values():
                values[2 * i] = values[2 * i + 1] = 0.0
        self.last = max(self.last, index)
        return i

    def count(self, index: int, requests: list[int], latency: list[int]) -> None:
        i = self.slot(index)
        if self.requests is None or self.latency is None:
            self.requests = array("I", [0]) * (CLASSES * self.tier.points)
            self.latency = array("I", [0]) * (BOUNDS * self.tier.points)
        # 4-byte counts: a point saturates at 4e9 (14 million requests a
        # second for 5 minutes) rather than overflow.
        for k, n in enumerate(requests):
            at = i * CLASSES + k
            self.requests[at] = min(COUNT_MAX, self.requests[at] + n)
        for k, n in enumerate(latency):
            at = i * BOUNDS + k
            self.latency[at] = min(COUNT_MAX, self.latency[at] + n)

    def gauge(self, index: int, key: tuple[str, str], value: float) -> None:
        i = self.slot(index)
        values = self.gauges.get(key)
        if values is None:
            values = self.gauges[key] = array("f", [0.0]) * (2 * self.tier.points)
        values[2 * i] += value
        values[2 * i + 1] += 1
        self.touched[key] = index

    def forget_before(self, oldest: int) -> None:
        """Drop the gauge series with no point after `oldest` (an instance
        gone, a release replaced)."""
        for key in [k for k, newest in self.touched.items() if newest <= oldest]:
            del self.gauges[key], self.touched[key]

    def held(self, index: int) -> int | None:
        """The slot holding point `index`, or None."""
        i = index % self.tier.points
        return i if self.stamp[i] == index else None


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
        # tier name -> app -> its ring
        self._tiers: dict[str, dict[str, Ring]] = {t: {} for t in TIERS}
        # router source -> (started, app -> (requests, latency), when) as last reported
        self._routers: dict[str, tuple[float, Cumulative, float]] = {}
        # instance -> (cpu seconds, wall time) at its previous sample
        self._cpu: dict[str, tuple[float, float]] = {}
        self._sampled: dict[str, float] = {}  # host -> when its heartbeat was last sampled
        self._expired_at = -1

    def _rings(self, app: str, now: float) -> list[tuple[Ring, int]]:
        """The app's ring in each tier, and the point `now` falls in."""
        self._expire(now)
        out = []
        for name, tier in TIERS.items():
            ring = self._tiers[name].get(app)
            if ring is None:
                ring = self._tiers[name][app] = Ring(tier)
            out.append((ring, int(now // tier.step)))
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
            for ring, index in self._rings(app, now):
                ring.count(index, d_requests, d_latency)
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
            rings = self._rings(st.app, now)
            label = instance_label(st)
            for ring, index in rings:
                ring.gauge(index, ("memory", label), st.memory_mb)
            prev = self._cpu.get(st.instance_id)
            self._cpu[st.instance_id] = (st.cpu_seconds, now)
            if prev is None or now <= prev[1] or st.cpu_seconds < prev[0]:
                continue  # no earlier sample of this process to measure from
            load = 100.0 * (st.cpu_seconds - prev[0]) / (now - prev[1])
            for ring, index in rings:
                ring.gauge(index, ("cpu", label), load)

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
            rings = self._tiers[name]
            oldest = int(now // tier.step) - tier.points
            for app in [a for a, ring in rings.items() if ring.last <= oldest]:
                del rings[app]
            for ring in rings.values():
                ring.forget_before(oldest)
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
        ring = self._tiers[tier_name].get(app) or Ring(tier)
        last = int(now // tier.step)
        indexes = range(last - tier.points + 1, last + 1)
        slots = [ring.held(i) for i in indexes]
        # The newest point is still filling: its rate is over the part elapsed.
        spans = [float(tier.step)] * len(slots)
        spans[-1] = max(1.0, now - last * tier.step)
        requests, latency = ring.requests, ring.latency
        rps: dict[str, list[float | None]] = {}
        for k, cls in enumerate(STATUS_CLASSES):
            rps[cls] = [
                None
                if i is None
                else round(requests[i * CLASSES + k] / span, 3)
                if requests
                else 0.0
                for i, span in zip(slots, spans, strict=True)
            ]
        histograms = [
            None if i is None or latency is None else list(latency[i * BOUNDS : (i + 1) * BOUNDS])
            for i in slots
        ]
        gauges: dict[str, dict[str, list[float | None]]] = {"memory": {}, "cpu": {}}
        for (metric, label), values in sorted(ring.gauges.items()):
            gauges[metric][label] = [
                None
                if i is None or not values[2 * i + 1]
                else round(values[2 * i] / values[2 * i + 1], 2)
                for i in slots
            ]
        return {
            "tier": tier.name,
            "step": tier.step,
            "t": [i * tier.step for i in indexes],
            "rps": rps,
            "latency_ms": {
                f"p{q}": [_ms(quantile(q / 100, h)) if h else None for h in histograms]
                for q in PERCENTILES
            },
            "memory_mb": gauges["memory"],
            "cpu_percent": gauges["cpu"],
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


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)
