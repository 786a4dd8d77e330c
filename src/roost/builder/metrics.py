"""The builder's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from roost.wire.messages import BuildResult

BUILDS = Counter("roost_builder_builds_total", "Finished builds", ["result"])
DURATION = Histogram(
    "roost_builder_build_seconds",
    "Build wall-clock time",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
)
RUNNING = Gauge("roost_builder_builds_running", "Builds in progress")


def record(result: BuildResult) -> None:
    BUILDS.labels("succeeded" if result.ok else "failed").inc()
    DURATION.observe(result.duration_s)
