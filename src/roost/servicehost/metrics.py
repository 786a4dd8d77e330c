"""The servicehost's Prometheus metrics, refreshed from each status it collects."""

from __future__ import annotations

from prometheus_client import Gauge

from roost.wire.messages import ServiceHostStatus

UP = Gauge("roost_service_up", "1 when the server is up", ["app", "kind"])
RESTARTS = Gauge(
    "roost_service_restarts", "Restarts of a server by the servicehost", ["app", "kind"]
)
DISK = Gauge("roost_service_disk_bytes", "Disk used by a service", ["app", "kind"])
FREE = Gauge("roost_servicehost_disk_free_bytes", "Free disk on the servicehost")


def record(status: ServiceHostStatus) -> None:
    for g in (UP, RESTARTS, DISK):
        g.clear()  # removed services disappear
    for s in status.servers:
        labels = (s.app or "(cluster)", s.kind)
        UP.labels(*labels).set(1.0 if s.state == "up" else 0.0)
        RESTARTS.labels(*labels).set(s.restarts)
        DISK.labels(*labels).set(s.disk_bytes)
    FREE.set(status.disk_free_bytes)
