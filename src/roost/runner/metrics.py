"""The runner's Prometheus metrics, read from the supervisor's records on scrape.

Scrapes run in prometheus_client's HTTP thread: they only take snapshots
(`list(...)` of the records, plain ints), never change anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from roost.runner.model import Record

STATES = ("pending", "starting", "up", "crashed", "backoff", "stopping", "stopped")


class RunnerCollector(Collector):
    def __init__(
        self,
        records: Callable[[], Iterable[Record]],
        dropped_log_lines: Callable[[], int],
        reachable: Callable[[], bool | None],
    ) -> None:
        self._records = records
        self._dropped = dropped_log_lines
        self._reachable = reachable

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        records = list(self._records())
        by_state: Counter[str] = Counter(r.state for r in records)
        instances = GaugeMetricFamily(
            "roost_runner_instances", "Instances on this host by state", labels=["state"]
        )
        for state in STATES:
            instances.add_metric([state], by_state.get(state, 0))
        yield instances
        restarts = CounterMetricFamily(
            "roost_runner_instance_restarts",
            "Restarts of each instance",
            labels=["app", "instance_id"],
        )
        for r in records:
            restarts.add_metric([r.assignment.app, r.instance_id], r.restarts)
        yield restarts
        yield CounterMetricFamily(
            "roost_runner_log_lines_dropped",
            "Log lines dropped because the controllers were unreachable",
            value=self._dropped(),
        )
        yield GaugeMetricFamily(
            "roost_runner_controllers_reachable",
            "1 when a controller answered the last heartbeat",
            value=1 if self._reachable() else 0,
        )
