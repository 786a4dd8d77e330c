"""The controller's metrics: API traffic, builds, and what heartbeats say."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.utils import floatToGoString

from roost.controller import pgwatch
from roost.controller.core import Controller
from roost.controller.softstate import SoftState

API_REQUESTS = Counter("roost_api_requests_total", "API requests", ["method", "route", "status"])
API_LATENCY = Histogram("roost_api_request_seconds", "API request latency", ["method", "route"])
BUILDS = Counter("roost_builds_total", "Finished builds", ["status"])


# Hosts written between yields to the event loop. The soft state's text is
# written on the loop, a slice at a time: at 50,000 instances it is 100,000
# lines, and written in a worker thread (as it once was, through
# prometheus_client's per-sample formatting: over a second) it held the GIL
# against the loop, stalling every heartbeat for as long.
HOSTS_PER_SLICE = 20


def _label(value: str) -> str:
    """A label value escaped as the exposition format wants it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _gauge(name: str, doc: str, samples: list[str]) -> str:
    return f"# HELP {name} {doc}\n# TYPE {name} gauge\n" + "".join(samples)


class SoftStateText:
    """What heartbeats say, as Prometheus text, read at scrape time (nothing
    to keep in sync). One per process serves every Controller object alive
    in it (a daemon has one; tests may have several)."""

    def __init__(self) -> None:
        self.controllers: weakref.WeakSet[Controller] = weakref.WeakSet()

    async def render(self) -> str:
        return "".join([await soft_state_text(c.soft, c.is_leader) for c in list(self.controllers)])


async def soft_state_text(soft: SoftState, leader: bool) -> str:
    """One controller's soft state as exposition text, written a slice of
    hosts at a time (the loop serves heartbeats in between)."""
    age: list[str] = []
    up: list[str] = []
    restarts: list[str] = []
    memory: list[str] = []
    value = _GoFloats()
    # A list of what there is now: a beat replaces a host's heartbeat (never
    # changes one), and hosts come and go between slices.
    hosts = list(soft.hosts.items())
    for i in range(0, len(hosts), HOSTS_PER_SLICE):
        if i:
            await asyncio.sleep(0)
        now = time.monotonic()
        for host_id, seen in hosts[i : i + HOSTS_PER_SLICE]:
            host = f'{{host="{_label(host_id)}"}} '
            age.append(f"roost_heartbeat_age_seconds{host}{value(now - seen.last_seen)}\n")
            up.append(f"roost_host_up{host}{'1.0' if seen.down_since is None else '0.0'}\n")
            for st in seen.heartbeat.instances:
                labels = f'{{app="{_label(st.app)}",instance="{_label(st.instance_id)}"}} '
                restarts.append(f"roost_instance_restarts{labels}{value(st.restarts)}\n")
                memory.append(f"roost_instance_memory_mb{labels}{value(st.memory_mb)}\n")
    return "".join(
        [
            _gauge("roost_heartbeat_age_seconds", "Seconds since a host's last heartbeat", age),
            _gauge("roost_host_up", "1 when the host is up", up),
            _gauge("roost_instance_restarts", "Restarts of an instance", restarts),
            _gauge("roost_instance_memory_mb", "Resident memory of an instance", memory),
            _gauge(
                "roost_scheduler_leader",
                "1 when this controller holds the scheduler lease",
                [f"roost_scheduler_leader {'1.0' if leader else '0.0'}\n"],
            ),
        ]
    )


class _GoFloats:
    """floatToGoString, remembered: most values (restarts, memory) repeat."""

    def __init__(self) -> None:
        self._seen: dict[float, str] = {}

    def __call__(self, v: float) -> str:
        text = self._seen.get(v)
        if text is None:
            text = self._seen[v] = floatToGoString(v)
        return text


_soft = SoftStateText()


def install(api: FastAPI, controller: Controller, guard: Callable[..., Any] | None = None) -> None:
    """Measure every request and serve /metrics, behind `guard` (a dependency) if given."""
    _soft.controllers.add(controller)

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
        # The registry (API and build counters) is small; the soft state is not.
        text = generate_latest(REGISTRY) + (await _soft.render()).encode()
        text += pgwatch.text(pgwatch.health_of(controller)).encode()  # the pairs' PostgreSQL
        return Response(text, media_type=CONTENT_TYPE_LATEST)
