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
# An app's Redis in a pair (redispairs.py): this copy's role, the master's lag.
REDIS_MASTER = Gauge("roost_redis_master", "1 when this copy of the app's Redis is master", ["app"])
REDIS_LAG = Gauge(
    "roost_redis_replica_lag_bytes", "How far the master's replica is behind", ["app"]
)
REDIS_PROBLEM = Gauge("roost_redis_replication_problem", "1 when its replication is wrong", ["app"])


def record(status: ServiceHostStatus) -> None:
    for g in (UP, RESTARTS, DISK, REDIS_MASTER, REDIS_LAG, REDIS_PROBLEM):
        g.clear()  # removed services disappear
    for s in status.servers:
        labels = (s.app or "(cluster)", s.kind)
        UP.labels(*labels).set(1.0 if s.state == "up" else 0.0)
        RESTARTS.labels(*labels).set(s.restarts)
        DISK.labels(*labels).set(s.disk_bytes)
        if s.kind == "redis" and s.redis_role:
            REDIS_MASTER.labels(s.app).set(1.0 if s.redis_role == "master" else 0.0)
            REDIS_LAG.labels(s.app).set(s.redis_lag_bytes)
            REDIS_PROBLEM.labels(s.app).set(1.0 if s.redis_problem else 0.0)
    FREE.set(status.disk_free_bytes)
