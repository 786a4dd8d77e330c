"""Placing a new app on a servicehost pair, and finding a pair's primary (pure)."""

from __future__ import annotations

import pytest

from roost import patroni
from roost.controller.serviceplace import NoPlace, pair_primary, place_pair
from roost.controller.services import LAG_WARN_BYTES, pg_problem
from roost.controller.store_pairs import PairRow
from roost.wire.messages import ServiceHostStatus

GB = 1 << 30
PAIRS = {"p1": ("sh1", "sh2"), "p2": ("sh3", "sh4")}


def report(host: str, free: int = 50 * GB) -> ServiceHostStatus:
    return ServiceHostStatus(servers=[], disk_free_bytes=free, disk_total_bytes=100 * GB, host=host)


def all_up(**free: int) -> dict[str, ServiceHostStatus]:
    hosts = ["sh1", "sh2", "sh3", "sh4"]
    return {h: report(h, free.get(h, 50 * GB)) for h in hosts}


def test_the_pair_with_the_fewest_apps_takes_the_new_one() -> None:
    assert place_pair(PAIRS, all_up(), {"p1": 3, "p2": 1}) == "p2"
    assert place_pair(PAIRS, all_up(), {"p1": 0, "p2": 1}) == "p1"


def test_equal_loads_go_to_the_pair_whose_fuller_member_has_most_room() -> None:
    # p1's members: 80 and 20 GB free; p2's: 40 and 40. p2's worst is better.
    reports = all_up(sh1=80 * GB, sh2=20 * GB, sh3=40 * GB, sh4=40 * GB)
    assert place_pair(PAIRS, reports, {}) == "p2"
    assert place_pair(PAIRS, all_up(), {}) == "p1"  # all equal: by name, the same everywhere


def test_a_degraded_pair_takes_an_app_only_when_no_pair_is_whole() -> None:
    reports = all_up()
    del reports["sh1"]  # p1's first member is silent
    assert place_pair(PAIRS, reports, {"p2": 10}) == "p2"
    full = all_up(sh3=GB // 2)  # p2's first member is nearly full
    del full["sh1"]
    assert place_pair(PAIRS, full, {}) == "p1", "both degraded: the fewest apps"


def test_no_pair_answering_or_configured_is_an_error_that_says_so() -> None:
    with pytest.raises(NoPlace, match="no servicehost pair is configured"):
        place_pair({}, all_up(), {})
    with pytest.raises(NoPlace, match="p1, p2"):
        place_pair(PAIRS, {}, {})


def test_the_primary_is_the_one_member_patroni_calls_so() -> None:
    assert pair_primary({"10.0.0.1": 503, "10.0.0.2": 200}) == "10.0.0.2"
    assert pair_primary({"10.0.0.1": 0, "10.0.0.2": 200}) == "10.0.0.2"
    # None, or both (a failover under way, a stale view): no guess.
    assert pair_primary({"10.0.0.1": 503, "10.0.0.2": 0}) is None
    assert pair_primary({"10.0.0.1": 200, "10.0.0.2": 200}) is None


def test_a_pair_row_names_the_servicehost_at_an_address() -> None:
    row = PairRow("p1", ("sh1", "sh2"), ("10.0.0.1", "10.0.0.2"), 5434, 8009, 6001)
    assert row.host_at("10.0.0.2") == "sh2"
    assert row.host_at("10.0.0.9") == ""


def view(*members: tuple[str, str, int | None]) -> patroni.ClusterView:
    return patroni.view(
        {
            "members": [
                {"name": n, "role": r, "state": "streaming", "lag": lag} for n, r, lag in members
            ]
        }
    )


def test_what_is_wrong_with_a_pair_as_patroni_sees_it() -> None:
    healthy = view(("a", "leader", None), ("b", "sync_standby", 0))
    assert pg_problem(healthy) == ""
    assert "no primary" in pg_problem(view(("b", "replica", 0)))
    assert "no standby" in pg_problem(view(("a", "leader", None)))
    assert "not synchronous" in pg_problem(view(("a", "leader", None), ("b", "replica", 0)))
    assert "unknown" in pg_problem(view(("a", "leader", None), ("b", "sync_standby", None)))
    behind = view(("a", "leader", None), ("b", "sync_standby", LAG_WARN_BYTES + 1))
    assert f"{LAG_WARN_BYTES + 1} bytes behind" in pg_problem(behind)
    # A standby being reinitialized (pgrejoin) says so, not just "not synchronous".
    copying = patroni.view(
        {
            "members": [
                {"name": "a", "role": "leader", "state": "running"},
                {"name": "b", "role": "replica", "state": "creating replica", "lag": "unknown"},
            ]
        }
    )
    assert "copied anew from the primary" in pg_problem(copying)
