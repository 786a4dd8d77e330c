"""The controller's metrics: API traffic, builds, and what heartbeats say."""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from roost.controller.core import Controller

API_REQUESTS = Counter("roost_api_requests_total", "API requests", ["method", "route", "status"])
API_LATENCY = Histogram("roost_api_request_seconds", "API request latency", ["method", "route"])
BUILDS = Counter("roost_builds_total", "Finished builds", ["status"])


class SoftStateCollector(Collector):
    """Reads the controllers' soft state at scrape time (nothing to keep in sync).

    One collector per process serves every Controller object alive in it (a
    daemon has one; tests may have several).
    """

    def __init__(self) -> None:
        self.controllers: weakref.WeakSet[Controller] = weakref.WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for c in list(self.controllers):
            yield from self._collect(c)

    def _collect(self, c: Controller) -> Iterator[GaugeMetricFamily]:
        now = time.monotonic()
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
        for host_id, seen in c.soft.hosts.items():
            age.add_metric([host_id], now - seen.last_seen)
            up.add_metric([host_id], 0.0 if seen.down_since is not None else 1.0)
            for st in seen.heartbeat.instances:
                restarts.add_metric([st.app, st.instance_id], st.restarts)
                memory.add_metric([st.app, st.instance_id], st.memory_mb)
        leader = GaugeMetricFamily(
            "roost_scheduler_leader", "1 when this controller holds the scheduler lease"
        )
        leader.add_metric([], 1.0 if c.is_leader else 0.0)
        yield from (age, up, restarts, memory, leader)


_collector = SoftStateCollector()
REGISTRY.register(_collector)


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
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
