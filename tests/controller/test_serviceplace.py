"""Where an app's services go, and who holds a binding recorded without a holder (pure)."""

from __future__ import annotations

import pytest

from roost.controller.serviceplace import NoPlace, find_holder, holders, place
from roost.wire.messages import ServerStatus, ServiceHostStatus

GB = 1 << 30


def report(host: str, *held: tuple[str, str], free: int = 50 * GB) -> ServiceHostStatus:
    servers = [ServerStatus(app="", kind="postgres", state="up")]  # the cluster itself
    servers += [ServerStatus(app=app, kind=kind, state="up") for app, kind in held]  # type: ignore[arg-type]
    return ServiceHostStatus(
        servers=servers, disk_free_bytes=free, disk_total_bytes=100 * GB, host=host
    )


def test_a_new_app_goes_where_the_fewest_apps_are() -> None:
    reports = {
        "svc1": report("svc1", ("a", "postgres"), ("a", "redis"), ("b", "postgres")),
        "svc2": report("svc2", ("c", "postgres")),
    }
    assert place(reports, {}) == "svc2"


def test_the_state_database_counts_what_a_report_does_not_list_yet() -> None:
    # Both empty by their reports, but svc1 was given an app a moment ago.
    reports = {"svc1": report("svc1"), "svc2": report("svc2")}
    assert place(reports, {"svc1": 1}) == "svc2"
    assert place(reports, {"svc2": 1}) == "svc1"


def test_equal_loads_go_to_the_most_free_disk_then_by_name() -> None:
    reports = {"svc1": report("svc1", free=20 * GB), "svc2": report("svc2", free=30 * GB)}
    assert place(reports, {}) == "svc2"
    same = {"svc2": report("svc2"), "svc1": report("svc1")}
    assert place(same, {}) == "svc1"  # deterministic: every controller picks the same


def test_a_nearly_full_host_takes_no_new_app() -> None:
    reports = {"svc1": report("svc1", free=GB // 2), "svc2": report("svc2", ("x", "redis"))}
    assert place(reports, {}) == "svc2"  # busier, but svc1 has no room
    with pytest.raises(NoPlace, match="nearly full: svc1"):
        place({"svc1": reports["svc1"]}, {})


def test_an_apps_second_service_joins_its_first() -> None:
    reports = {"svc1": report("svc1", ("a", "postgres"), ("b", "postgres")), "svc2": report("svc2")}
    assert place(reports, {}, app_holder="svc1") == "svc1"
    # Its holder silent: an error naming it, not another servicehost.
    with pytest.raises(NoPlace, match="servicehost svc1 holds the app's other services"):
        place({"svc2": reports["svc2"]}, {}, app_holder="svc1")


def test_no_servicehost_answering_is_an_error() -> None:
    with pytest.raises(NoPlace, match="no servicehost answers"):
        place({}, {})


def test_the_holder_is_the_one_that_reports_the_service() -> None:
    reports = {
        "svc1": report("svc1", ("a", "postgres")),
        "svc2": report("svc2", ("a", "redis"), ("b", "postgres")),
    }
    assert holders(reports.items(), "a", "redis") == ["svc2"]
    assert find_holder(reports, 2, "a", "postgres") == "svc1"
    assert find_holder(reports, 2, "b", "postgres") == "svc2"


def test_an_unreported_service_is_never_guessed_among_several() -> None:
    reports = {"svc1": report("svc1"), "svc2": report("svc2")}
    with pytest.raises(NoPlace, match="no servicehost reports holding a's redis"):
        find_holder(reports, 2, "a", "redis")
    # One of two silent: it may be the holder; say so instead of picking the other.
    with pytest.raises(NoPlace, match=r"1 of 2 answered"):
        find_holder({"svc1": reports["svc1"]}, 2, "a", "redis")
    both = {"svc1": report("svc1", ("a", "redis")), "svc2": report("svc2", ("a", "redis"))}
    with pytest.raises(NoPlace, match="several servicehosts: svc1, svc2"):
        find_holder(both, 2, "a", "redis")


def test_a_single_servicehost_holds_every_old_binding() -> None:
    # Its Redis stopped (not listed): still there is no other host it could be on.
    assert find_holder({"servicehost": report("servicehost")}, 1, "a", "redis") == "servicehost"
