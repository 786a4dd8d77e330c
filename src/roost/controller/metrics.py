"""The controller's metrics: API traffic, builds, and what heartbeats say."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from roost.controller.core import Controller
from roost.wire.messages import Heartbeat

API_REQUESTS = Counter("roost_api_requests_total", "API requests", ["method", "route", "status"])
API_LATENCY = Histogram("roost_api_request_seconds", "API request latency", ["method", "route"])
BUILDS = Counter("roost_builds_total", "Finished builds", ["status"])


@dataclass(frozen=True)
class _Seen:
    """One controller's soft state as a scrape saw it (read on the event loop)."""

    now: float
    hosts: list[tuple[str, float, bool, Heartbeat]]  # host, last seen, up, heartbeat
    leader: bool


class SoftStateCollector(Collector):
    """Reads the controllers' soft state at scrape time (nothing to keep in sync).

    One collector per process serves every Controller object alive in it (a
    daemon has one; tests may have several). The scrape copies what it needs
    on the event loop (a list per host) and renders the text in a worker
    thread: tens of thousands of instances make a second of formatting that
    must not hold up heartbeats.
    """

    def __init__(self) -> None:
        self.controllers: weakref.WeakSet[Controller] = weakref.WeakSet()
        self._seen: list[_Seen] | None = None  # set for the render under way

    def freeze(self) -> list[_Seen]:
        """What the next render shows (call on the event loop)."""
        now = time.monotonic()
        return [
            _Seen(
                now,
                [
                    (h, s.last_seen, s.down_since is None, s.heartbeat)
                    for h, s in c.soft.hosts.items()
                ],
                c.is_leader,
            )
            for c in list(self.controllers)
        ]

    def render(self, seen: list[_Seen]) -> bytes:
        """The registry's text with `seen` for the soft state (any thread)."""
        with _render_lock:
            self._seen = seen
            try:
                return generate_latest(REGISTRY)
            finally:
                self._seen = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for seen in self._seen if self._seen is not None else self.freeze():
            yield from self._collect(seen)

    def _collect(self, c: _Seen) -> Iterator[GaugeMetricFamily]:
        now = c.now
        age = GaugeMetricFamily(
            "roost_heartbeat_age_seconds", "Seconds since a host's last heartbeat", labels=["host"]
        )
        up = GaugeMetricFamily("roost_host_up", "1 when the host is up", labels=["host"])
        restarts = GaugeMetricFamily(
            "roost_instance_restarts", "Restarts of an instance", labels=["app", "instance"]
        )
        memory = GaugeMetricFamily(
            "roost_instance_memory_mb", "Resident memory of an instance", labels=["app", "instance"]
        )
        for host_id, last_seen, alive, hb in c.hosts:
            age.add_metric([host_id], now - last_seen)
            up.add_metric([host_id], 1.0 if alive else 0.0)
            for st in hb.instances:
                restarts.add_metric([st.app, st.instance_id], st.restarts)
                memory.add_metric([st.app, st.instance_id], st.memory_mb)
        leader = GaugeMetricFamily(
            "roost_scheduler_leader", "1 when this controller holds the scheduler lease"
        )
        leader.add_metric([], 1.0 if c.leader else 0.0)
        yield from (age, up, restarts, memory, leader)


_collector = SoftStateCollector()
REGISTRY.register(_collector)
_render_lock = threading.Lock()


def install(api: FastAPI, controller: Controller, guard: Callable[..., Any] | None = None) -> None:
    """Measure every request and serve /metrics, behind `guard` (a dependency) if given."""
    _collector.controllers.add(controller)

    @api.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        API_LATENCY.labels(request.method, path).observe(time.perf_counter() - started)
        API_REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        return response

    @api.get(
        "/metrics",
        include_in_schema=False,
        dependencies=[Depends(guard)] if guard is not None else None,
    )
    async def metrics() -> Response:
        text = await asyncio.to_thread(_collector.render, _collector.freeze())
        return Response(text, media_type=CONTENT_TYPE_LATEST)
