"""Prometheus metrics: shared helpers so every daemon exposes them the same way.

Each daemon serves its registry on `settings.metrics_port` (0: off) at
/metrics; the controller also serves it on its API port. Metric names start
with `roost_` and carry the role as a label where several roles share one.
"""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

log = logging.getLogger("roost.metrics")


def serve(port: int, host: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY) -> None:
    """Start the /metrics endpoint in a background thread (prometheus_client's)."""
    if port <= 0:
        return
    start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, port)
