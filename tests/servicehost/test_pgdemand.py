"""When the servicehost's own PostgreSQL starts with the daemon (pure: pgdemand.py)."""

from __future__ import annotations

from roost.servicehost.pgdemand import needed_at_start, start_problem
from roost.servicehost.state import HostState, PgCluster, Restore, Service


def _state(**kw: object) -> HostState:
    return HostState(postgres=PgCluster(port=5432, password="p", initialized=True), **kw)  # type: ignore[arg-type]


def _db(app: str) -> Service:
    return Service(app=app, kind="postgres", port=5432, database=app, username=app, password="x")


def test_a_host_with_no_database_waits() -> None:
    assert needed_at_start(HostState(), "on-demand", False) == ""
    assert needed_at_start(_state(), "on-demand", False) == ""
    # Redis and buckets are no reason for PostgreSQL.
    redis = Service(app="a", kind="redis", port=6400, password="x")
    assert needed_at_start(_state(services={"redis/a": redis}), "on-demand", False) == ""


def test_a_database_a_restore_or_backupd_streaming_it_starts_it() -> None:
    assert needed_at_start(_state(services={"postgres/a": _db("a")}), "on-demand", False)
    prepared = Restore(id="r1", app="a", kind="postgres", step="prepared", at=1.0, database="d")
    assert needed_at_start(_state(restores={"postgres/a/r1": prepared}), "on-demand", False)
    streamed = HostState(postgres=PgCluster(port=5432, password="p", backup_password="b"))
    assert needed_at_start(streamed, "on-demand", False) == "backupd streams it"


def test_a_discarded_restore_or_another_kind_is_no_reason() -> None:
    gone = Restore(id="r1", app="a", kind="postgres", step="discarded", at=1.0)
    redis = Restore(id="r2", app="a", kind="redis", step="swapped", at=1.0)
    restores = {"postgres/a/r1": gone, "redis/a/r2": redis}
    assert needed_at_start(_state(restores=restores), "on-demand", False) == ""


def test_always_and_a_cluster_host_start_it_as_before() -> None:
    assert needed_at_start(HostState(), "always", False)
    assert needed_at_start(_state(), "on-demand", True)


def test_the_setting_is_checked() -> None:
    assert start_problem("on-demand") is None and start_problem("always") is None
    why = start_problem("lazy")
    assert why is not None and "ROOST_POSTGRES_START" in why and "'lazy'" in why
