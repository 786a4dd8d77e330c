"""The charts' time series: pure, with a fake clock (times are plain numbers)."""

from __future__ import annotations

import pytest

from roost.controller.history import DAY, HOUR, History, instance_label, quantile
from roost.wire.messages import Heartbeat, InstanceStatus, RouterStats

T0 = 1_800_000_000.0  # a multiple of 300: buckets line up with it


def stats(source: str, started: float, ok: int, errors: int, fast: int, slow: int) -> RouterStats:
    latency = [0] * 12
    latency[0], latency[6] = fast, slow  # <= 5 ms, and 250..500 ms
    return RouterStats(
        source=source,
        started=started,
        requests={"shop": [0, ok, 0, 0, errors]},
        latency={"shop": latency},
    )


def beat(host: str, mem: float, cpu: float, state: str = "up") -> Heartbeat:
    inst = InstanceStatus(
        instance_id="shop-web-1-v3-a1b2c3",
        app="shop",
        release=1,
        process_type="web",
        state=state,  # type: ignore[arg-type]
        memory_mb=mem,
        cpu_seconds=cpu,
    )
    return Heartbeat(host_id=host, hostname=host, instances=[inst])


def test_quantile_interpolates_inside_a_bucket() -> None:
    counts = [0] * 12
    counts[4] = 100  # all between 50 and 100 ms
    assert quantile(0.5, counts) == pytest.approx(0.075)
    assert quantile(0.99, counts) == pytest.approx(0.0995)
    assert quantile(0.5, [0] * 12) is None
    slow = [0] * 11 + [5]  # past the last finite bound: that bound
    assert quantile(0.99, slow) == 10.0


def test_router_counters_become_rates_by_status_class() -> None:
    h = History()
    h.router(stats("r1/1", T0, 0, 0, 0, 0), T0 + 1)
    h.router(stats("r1/1", T0, 100, 10, 100, 10), T0 + 11)  # 100 ok, 10 errors in the bucket
    s = h.series("shop", "hour", T0 + 20)
    assert s["step"] == 10 and len(s["t"]) == HOUR.points
    assert s["t"][-1] == T0 + 20 - 20 % 10
    # the bucket of T0+11 is [T0+10, T0+20): a full step, 100 requests -> 10/s
    assert s["rps"]["2xx"][-2] == 10.0 and s["rps"]["5xx"][-2] == 1.0
    assert s["rps"]["2xx"][-3] is None  # nothing heard there: a gap, not a zero
    p50, p99 = s["latency_ms"]["p50"][-2], s["latency_ms"]["p99"][-2]
    assert p50 is not None and p50 <= 5.0
    assert p99 is not None and 250.0 < p99 <= 500.0


def test_two_workers_add_up_and_a_restart_is_not_negative() -> None:
    h = History()
    h.router(stats("r1/1", T0, 0, 0, 0, 0), T0)
    h.router(stats("r2/7", T0, 0, 0, 0, 0), T0)
    h.router(stats("r1/1", T0, 50, 0, 50, 0), T0 + 12)
    h.router(stats("r2/7", T0, 30, 0, 30, 0), T0 + 13)
    # r1 restarted (a new start time): its 20 since then count, not 20 - 50
    h.router(stats("r1/1", T0 + 20, 20, 0, 20, 0), T0 + 22)
    s = h.series("shop", "hour", T0 + 30)
    assert s["rps"]["2xx"][-3] == 8.0  # (50 + 30) / 10 s
    assert s["rps"]["2xx"][-2] == 2.0


def test_a_new_controller_takes_old_totals_as_a_baseline() -> None:
    h = History()
    # a worker up for a day, first heard now: its totals are not this bucket's
    h.router(stats("r1/1", T0 - 86_400, 10_000_000, 0, 10_000_000, 0), T0)
    h.router(stats("r1/1", T0 - 86_400, 10_000_100, 0, 10_000_100, 0), T0 + 10)
    s = h.series("shop", "hour", T0 + 15)
    assert s["rps"]["2xx"][-1] == 100 / 5  # the newest bucket's rate is over its 5 s so far
    assert all(v is None for v in s["rps"]["2xx"][:-1])


def test_day_tier_sums_five_minutes_and_percentiles_come_from_the_sum() -> None:
    h = History()
    h.router(stats("r1/1", T0, 0, 0, 0, 0), T0)
    for k in range(1, 30):  # 29 reports, 10 s apart, inside one 5-minute bucket
        h.router(stats("r1/1", T0, 10 * k, 0, 9 * k, k), T0 + 10 * k)
    day = h.series("shop", "day", T0 + DAY.step)
    assert day["step"] == 300 and len(day["t"]) == DAY.points
    assert day["rps"]["2xx"][-2] == round(290 / 300, 3)
    # 10 % are slow: p95 is among the slow ones, p50 among the fast
    assert day["latency_ms"]["p95"][-2] > 250 and day["latency_ms"]["p50"][-2] <= 5


def test_memory_and_cpu_per_instance_sampled_once_per_step() -> None:
    h = History()
    h.heartbeat(beat("host-1", 100.0, 50.0), T0)
    h.heartbeat(beat("host-1", 999.0, 51.0), T0 + 1)  # inside the step: not sampled
    h.heartbeat(beat("host-1", 120.0, 55.0), T0 + 10)  # 5 s of CPU in 10 s: 50 %
    s = h.series("shop", "hour", T0 + 15)
    assert s["memory_mb"]["web.1 v3"][-2:] == [100.0, 120.0]
    assert s["cpu_percent"]["web.1 v3"][-2:] == [None, 50.0]  # the first has no rate yet


def test_a_crashed_instance_starts_its_cpu_rate_again() -> None:
    h = History()
    h.heartbeat(beat("host-1", 100.0, 500.0), T0)
    h.heartbeat(beat("host-1", 0.0, 0.0, "crashed"), T0 + 10)
    h.heartbeat(beat("host-1", 80.0, 1.0), T0 + 20)  # a new process: no rate from 500 s
    h.heartbeat(beat("host-1", 80.0, 3.0), T0 + 30)
    s = h.series("shop", "hour", T0 + 35)
    assert s["cpu_percent"]["web.1 v3"][-2:] == [None, 20.0]


def test_old_points_and_silent_apps_are_forgotten() -> None:
    h = History()
    h.router(stats("r1/1", T0, 0, 0, 0, 0), T0)
    h.router(stats("r1/1", T0, 10, 0, 10, 0), T0 + 10)
    # an hour later nothing of it is in the hour window
    later = T0 + 10 + HOUR.step * HOUR.points
    assert all(v is None for v in h.series("shop", "hour", later)["rps"]["2xx"])
    # a day later another app's traffic makes the silent one's series go
    h.router(RouterStats(source="r9/1", started=later, requests={"blog": [0, 1, 0, 0, 0]}), later)
    h.router(
        RouterStats(source="r9/1", started=later, requests={"blog": [0, 2, 0, 0, 0]}),
        T0 + 2 * DAY.step * DAY.points,
    )
    assert "shop" not in h._tiers["hour"] and "shop" not in h._tiers["day"]
    assert "blog" in h._tiers["hour"]
    assert h.series("nobody", "day", later)["memory_mb"] == {}


def test_instances_are_named_by_slot_and_release() -> None:
    def named(instance_id: str) -> str:
        st = InstanceStatus(
            instance_id=instance_id, app="my-shop", release=3, process_type="web", state="up"
        )
        return instance_label(st)

    assert named("my-shop-web-2-v3-0f9e8d") == "web.2 v3"
    assert named("my-shop-celery-beat-1-v12-abcdef") == "celery-beat.1 v12"
    assert named("something-else") == "something-else"  # not a scheduler's id: as it is
