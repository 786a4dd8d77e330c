"""backupd's metrics, read from the catalog at scrape time (nothing to keep in sync).

roost_backup_verified_age_seconds{app,kind}: since the newest verified
    backup was taken; an (app, kind) with backups but none verified shows
    +Inf, so an alert on age fires for one that was never proven too;
roost_backup_last_failed{app,kind}: 1 when the newest backup or its drill failed;
roost_backup_failures{app,kind}: failed backups and drills in the catalog;
roost_backup_location_errors{app,kind,location}: 1 when the newest backup
    did not reach that location.

App "" is the platform's own backups and the PostgreSQL clusters' base backups.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from roost.backups.catalog import Catalog, Record


def families(records: Iterable[Record], now: float) -> list[GaugeMetricFamily]:
    """The metrics of these records at `now` (pure)."""
    age = GaugeMetricFamily(
        "roost_backup_verified_age_seconds",
        "Seconds since the newest verified backup was taken (+Inf: none verified)",
        labels=["app", "kind"],
    )
    last_failed = GaugeMetricFamily(
        "roost_backup_last_failed",
        "1 when the newest backup or its drill failed",
        labels=["app", "kind"],
    )
    failures = GaugeMetricFamily(
        "roost_backup_failures",
        "Failed backups and drills still in the catalog",
        labels=["app", "kind"],
    )
    location = GaugeMetricFamily(
        "roost_backup_location_errors",
        "1 when the newest backup did not reach the location",
        labels=["app", "kind", "location"],
    )
    newest: dict[tuple[str, str], Record] = {}
    verified: dict[tuple[str, str], float] = {}
    failed: dict[tuple[str, str], int] = {}
    for r in records:
        e = r.entry
        if e.state == "skipped":
            continue  # nothing was there to back up: neither a backup nor a failure
        key: tuple[str, str] = (e.app, e.kind)
        if key not in newest or e.taken_at > newest[key].entry.taken_at:
            newest[key] = r
        if e.state == "verified":
            verified[key] = max(verified.get(key, 0.0), e.taken_at)
        failed[key] = failed.get(key, 0) + (e.state == "failed")
    for key in sorted(newest):
        labels = list(key)
        at = verified.get(key)
        age.add_metric(labels, now - at if at is not None else math.inf)
        last_failed.add_metric(labels, 1.0 if newest[key].entry.state == "failed" else 0.0)
        failures.add_metric(labels, float(failed[key]))
        for name, state in sorted(newest[key].entry.locations.items()):
            location.add_metric([*labels, name], 0.0 if state == "ok" else 1.0)
    return [age, last_failed, failures, location]


class CatalogCollector(Collector):
    def __init__(self, catalog: Catalog, clock: Callable[[], float] = time.time) -> None:
        self.catalog = catalog
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        yield from families(self.catalog.records(), self.clock())


def watch(catalog: Catalog) -> CatalogCollector:
    """Export this catalog's metrics on the process's registry."""
    collector = CatalogCollector(catalog)
    REGISTRY.register(collector)
    return collector
