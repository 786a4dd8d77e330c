"""The controller's part in an app's Redis pair, as data (controller/redispair.py)
and how `roost services info` shows it (cli/services.py)."""

from __future__ import annotations

from roost.cli.services import redis_pair_lines
from roost.controller import redispair
from roost.controller.redispair import ReplicaWatch, Seen
from roost.wire.messages import RedisCopy, ServerStatus, ServiceCredentials, ServiceHostStatus

COPY = RedisCopy(
    port=7001, memory_mb=16, password="p", admin_password="a", backup_password="b",
    replica_password="r", master_host="10.0.0.1",
)  # fmt: skip


def row(app: str, role: str, problem: str = "", lag: int = 0) -> ServerStatus:
    return ServerStatus(
        app=app, kind="redis", state="up", port=7001, redis_role=role,
        redis_peer="x", redis_lag_bytes=lag, redis_problem=problem,
    )  # fmt: skip


NOW = 1_000_000.0


def report(host: str, *rows: ServerStatus, at: float = NOW) -> ServiceHostStatus:
    return ServiceHostStatus(servers=list(rows), host="servicehost", host_id=host, sent_at=at)


def test_the_partners_secrets_are_never_stored_or_shown() -> None:
    creds = ServiceCredentials(
        app="blog", kind="redis", host="10.0.0.1", port=7001, password="p", url="u", copy=COPY
    )
    assert redispair.without_copy(creds).copy is None
    assert redispair.without_copy(creds).password == "p"
    kept = redispair.stored(creds)
    assert "copy" not in kept and kept["password"] == "p"
    # What is stored opens as credentials again, on a controller of any age.
    assert ServiceCredentials(**kept) == redispair.without_copy(creds)


def test_two_servicehosts_make_the_pair_more_are_not_guessed() -> None:
    assert redispair.partner("a", ["a", "b"], 2) == "b"
    assert redispair.partner("a", ["a"], 2) == ""  # the partner does not answer
    assert redispair.partner("a", ["a", "b", "c"], 3) == ""
    assert redispair.partner("a", ["b"], 1) == ""
    # The pairs' record names it, whoever answers now.
    assert redispair.partner("c", ["a", "b", "c"], 4, ("d", "c")) == "d"
    assert redispair.partner("c", ["c"], 4, ("d", "c")) == "d"


def test_the_pair_is_shown_from_both_copies_reports() -> None:
    reports = [
        report("10.0.0.2", row("blog", "replica")),
        report("10.0.0.1", row("blog", "master", lag=42), row("other", "master")),
    ]
    assert redispair.replication(reports, "blog", NOW + 5) == {
        "redis_master": "10.0.0.1:7001", "redis_replica": "10.0.0.2:7001",
        "redis_lag_bytes": 42, "redis_problem": "",
    }  # fmt: skip
    alone = [report("10.0.0.2", row("blog", "master", "master: no replica is connected"))]
    shown = redispair.replication(alone, "blog", NOW)
    assert shown["redis_replica"] == ""
    assert shown["redis_problem"] == "10.0.0.2: master: no replica is connected"
    # One machine: no pair, nothing to add.
    single = ServerStatus(app="blog", kind="redis", state="up", port=7001)
    assert redispair.replication([report("h", single)], "blog", NOW) == {}
    # A dead host's last report (it was master) says nothing any more.
    stale = report("10.0.0.1", row("blog", "master"), at=NOW - redispair.MAX_AGE_S - 1)
    assert redispair.replication([stale, *alone], "blog", NOW)["redis_master"] == "10.0.0.2:7001"


def test_a_problem_is_an_event_once_and_its_end_another() -> None:
    watch = ReplicaWatch()
    assert watch.look("h1", report("h1", row("blog", "master"))) == []
    gone = report("h1", row("blog", "master", "master: no replica is connected"))
    assert watch.look("h1", gone) == [Seen("blog", "h1", "master: no replica is connected")]
    assert watch.look("h1", gone) == []  # the same problem, again: said once
    # Another host's report says nothing of h1's copies.
    assert watch.look("h2", report("h2")) == []
    assert watch.look("h1", report("h1", row("blog", "master"))) == [Seen("blog", "h1", "")]
    # A copy removed while in trouble is forgotten without an event.
    watch.look("h1", gone)
    assert watch.look("h1", report("h1")) == []
    assert watch.look("h1", report("h1", row("blog", "master"))) == []
    assert "healthy again" in redispair.message(Seen("blog", "h1", ""))
    assert "no replica" in redispair.message(Seen("blog", "h1", "master: no replica"))


def test_services_info_shows_the_pair_and_its_problem_in_red() -> None:
    assert redis_pair_lines({"port": 7001}) == []
    lines = dict(
        redis_pair_lines(
            {
                "redis_master": "10.0.0.2:7001", "redis_replica": "", "redis_lag_bytes": 0,
                "redis_problem": "10.0.0.2: master: no replica is connected",
            }
        )
    )  # fmt: skip
    assert lines["master"] == "10.0.0.2:7001"
    assert "none" in lines["replica"] and "red" in lines["replica"]
    assert lines["replication"] == "0 bytes behind"
    assert "no replica is connected" in lines["problem"] and "red" in lines["problem"]
