"""roost cluster upgrade's decisions (roost.cli.upgradeplan), as data: no sockets."""

from __future__ import annotations

import pytest

from roost.cli.upgradeplan import (
    DrainSeen,
    Member,
    RunnerSeen,
    Seen,
    Verdict,
    backup_step,
    drain_verdict,
    judge,
    members,
    needs_drain,
    order,
    select,
    servicehost_warning,
    unmet,
)

CLUSTER = members(
    [
        ("runner", "10.0.0.21"),
        ("router", "10.0.0.31"),
        ("controller", "10.0.0.12"),
        ("builder", "10.0.0.12"),
        ("controller", "10.0.0.11"),
        ("builder", "10.0.0.11"),
        ("controller", "10.0.0.13"),
        ("runner", "10.0.0.22"),
        ("servicehost", "10.0.0.41"),
        ("router", "10.0.0.21"),  # a runner's host that routes too
        ("unknown-role", "10.0.0.99"),
    ]
)


def hosts(ms: list[Member]) -> list[str]:
    return [m.host for m in ms]


def test_members_one_per_host_roles_in_order_unknown_roles_ignored() -> None:
    by = {m.host: m.roles for m in CLUSTER}
    assert by["10.0.0.11"] == ("controller", "builder")
    assert by["10.0.0.21"] == ("runner", "router")
    assert "10.0.0.99" not in by


def test_controllers_first_the_lease_holder_last_of_them_then_services_runners_routers() -> None:
    assert hosts(order(CLUSTER, "10.0.0.11")) == [
        "10.0.0.12",
        "10.0.0.13",
        "10.0.0.11",  # holds the lease: it moves once, to an upgraded replica
        "10.0.0.41",
        "10.0.0.21",
        "10.0.0.22",
        "10.0.0.31",
    ]
    # No holder known (none answered): by address.
    assert hosts(order(CLUSTER, None))[:3] == ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
    # A runner named as "holder" changes nothing: only controllers hold it.
    assert order(CLUSTER, "10.0.0.21") == order(CLUSTER, None)


def test_select_keeps_the_plan_order_and_refuses_strangers() -> None:
    planned = order(CLUSTER, None)
    assert hosts(select(planned, ["10.0.0.31", "10.0.0.11"])) == ["10.0.0.11", "10.0.0.31"]
    assert select(planned, []) == planned
    with pytest.raises(ValueError, match=r"10\.9\.9\.9"):
        select(planned, ["10.9.9.9"])


NEW = "0.2.0"
REPLACED_AT = 100.0


def runner(state: str = "up", release: str = NEW, beat_at: float = 101.0) -> RunnerSeen:
    return RunnerSeen(state=state, release=release, beat_at=beat_at)


@pytest.mark.parametrize(
    ("roles", "seen", "why"),
    [
        (("controller",), Seen(), "controller's API does not answer"),
        (("controller",), Seen(controller_version="0.1.0"), "controller runs 0.1.0"),
        (("controller",), Seen(controller_version=""), "controller runs an older release"),
        (("runner",), Seen(), "do not list its runner"),
        (("runner",), Seen(runner=runner(state="down")), "runner is down"),
        (("runner",), Seen(runner=runner(release="")), "runner runs 0.1.0"),
        # Up, but on a beat its predecessor sent before the replacement ended.
        (("runner",), Seen(runner=runner(beat_at=99.0)), "no heartbeat from its runner since"),
        (("router",), Seen(), "router does not accept"),
        (("builder",), Seen(accepting={"builder": False}), "builder does not accept"),
    ],
)
def test_each_unmet_condition_is_named(roles: tuple[str, ...], seen: Seen, why: str) -> None:
    [said] = unmet(roles, seen, NEW, REPLACED_AT)
    assert why in said


def test_a_host_is_healthy_when_every_role_is() -> None:
    roles = ("controller", "builder", "runner", "router")
    whole = Seen(
        controller_version=NEW, runner=runner(), accepting={"builder": True, "router": True}
    )
    assert unmet(roles, whole, NEW, REPLACED_AT) == []
    half = Seen(controller_version=NEW, runner=runner(), accepting={"builder": True})
    assert unmet(roles, half, NEW, REPLACED_AT) == ["its router does not accept connections"]


def test_judge_waits_until_the_deadline_then_fails_saying_why() -> None:
    roles = ("runner",)
    late = Seen(runner=runner(beat_at=50.0))
    assert judge(roles, late, NEW, REPLACED_AT, now=110.0, deadline=120.0).state == "waiting"
    failed = judge(roles, late, NEW, REPLACED_AT, now=120.0, deadline=120.0)
    assert failed.state == "failed"
    assert "no heartbeat" in failed.why
    ok = judge(roles, Seen(runner=runner()), NEW, REPLACED_AT, now=500.0, deadline=120.0)
    assert ok.state == "healthy"  # healthy is healthy, even when seen late


def test_backup_first_refused_without_a_backupd_unless_told() -> None:
    assert backup_step({"configured": True, "entries": []}, no_backup=False)[0] is True
    with pytest.raises(ValueError, match="--no-backup"):
        backup_step({"configured": False}, no_backup=False)
    assert backup_step({"configured": False}, no_backup=True)[0] is False


def test_a_runner_is_drained_first_when_it_cannot_hand_over() -> None:
    assert needs_drain(("runner",), "", always=False)  # 0.1.0: kills its instances
    assert not needs_drain(("runner",), "0.2.0", always=False)  # hands them over
    assert needs_drain(("runner", "router"), "0.2.0", always=True)  # --drain
    assert not needs_drain(("router",), "", always=True)  # no runner: nothing to drain
    assert not needs_drain(("runner",), None, always=True)  # not listed: nothing placed


def test_a_drain_ends_when_a_beat_after_it_reports_no_instance() -> None:
    since, deadline = 100.0, 400.0
    empty_old = DrainSeen(drained=True, instances=0, beat_at=99.0)  # before the drain
    assert drain_verdict(empty_old, since, 150.0, deadline).state == "waiting"
    moving = DrainSeen(drained=True, instances=2, beat_at=150.0)
    v = drain_verdict(moving, since, 150.0, deadline)
    assert v.state == "waiting" and "2 instance" in v.why
    assert drain_verdict(DrainSeen(True, 0, beat_at=151.0), since, 152.0, deadline) == Verdict(
        "healthy"
    )
    stuck = DrainSeen(True, 1, note="no other host has room for shop web.1", beat_at=390.0)
    v = drain_verdict(stuck, since, 400.0, deadline)
    assert v.state == "failed" and "no other host has room for shop web.1" in v.why
    assert drain_verdict(DrainSeen(False, 1), since, 150.0, deadline).state == "failed"
    assert drain_verdict(None, since, 150.0, deadline).state == "waiting"
    assert drain_verdict(None, since, 400.0, deadline).state == "failed"


def test_servicehosts_of_a_cluster_on_0_1_0_warn_that_databases_restart() -> None:
    said = servicehost_warning(("servicehost",), ["0.2.0", ""])
    assert "PostgreSQL and Redis" in said and "restart" in said
    assert servicehost_warning(("servicehost",), ["0.2.0"]) == ""
    assert servicehost_warning(("runner",), [""]) == ""
