"""Each pair's PostgreSQL as metrics, dashboard lines and platform events
(controller/pgwatch.py), from Patroni's /cluster answers as data."""

from __future__ import annotations

from typing import Any

from roost.controller.pgwatch import NO_ANSWER, PairHealth, PairWatch, judge, text
from roost.controller.store_pairs import PairRow

P1 = PairRow("p1", ("sh1", "sh2"), ("10.0.0.1", "10.0.0.2"), 5434, 8009, 6432)


def cluster(standby_role: str = "sync_standby", lag: Any = 0) -> dict[str, Any]:
    members = [{"name": "10.0.0.1", "role": "leader", "state": "running", "host": "10.0.0.1"}]
    if standby_role:
        members.append({"name": "10.0.0.2", "role": standby_role, "state": "streaming", "lag": lag})
    return {"members": members}


def answers(body: dict[str, Any] | None) -> dict[str, tuple[int, object]]:
    return {"10.0.0.1": (200, body) if body else (0, None), "10.0.0.2": (0, None)}


def test_what_patroni_says_is_judged() -> None:
    assert judge(P1, answers(cluster()), 1.0).problem == ""
    assert "no standby" in judge(P1, answers(cluster(standby_role="")), 1.0).problem
    assert "not synchronous" in judge(P1, answers(cluster("replica")), 1.0).problem
    assert "bytes behind" in judge(P1, answers(cluster(lag=64 << 20)), 1.0).problem
    silent = judge(P1, answers(None), 1.0)
    assert silent.view is None and silent.problem == NO_ANSWER


def test_a_problem_is_an_event_once_and_its_end_another() -> None:
    watch = PairWatch()
    healthy, alone = judge(P1, answers(cluster()), 1), judge(P1, answers(cluster("")), 2)
    assert watch.look([healthy]) == []
    first = watch.look([alone])
    assert len(first) == 1 and "pair p1" in first[0] and "no standby" in first[0]
    assert watch.look([alone]) == [], "said once"
    assert watch.look([healthy]) == ["PostgreSQL of servicehost pair p1: replication healthy again"]
    assert watch.look([healthy]) == []
    watch.look([alone])
    assert watch.look([]) == [], "a pair gone says nothing"
    assert watch.look([healthy]) == []


def test_metrics_and_the_dashboard_line_name_members_by_host_id() -> None:
    health = PairHealth()
    assert text(health) == "", "no pair: no series"
    health.update([judge(P1, answers(cluster(lag=4096)), 1)])
    out = text(health)
    assert 'roost_pg_primary{pair="p1",member="sh1"} 1' in out
    assert 'roost_pg_primary{pair="p1",member="sh2"} 0' in out
    assert 'roost_pg_replica_lag_bytes{pair="p1",member="sh2"} 4096' in out
    assert 'roost_pg_replication_problem{pair="p1"} 0' in out
    assert health.shown("p1") == "postgres pair p1: primary sh1, standby sh2 (4096 B behind)"
    assert health.shown("p2") == ""
    health.update([judge(P1, answers(cluster("")), 2)])
    assert 'roost_pg_replication_problem{pair="p1"} 1' in text(health)
    assert "no standby" in health.shown("p1")
    health.update([judge(P1, answers(None), 3)])
    assert health.shown("p1") == f"postgres pair p1: {NO_ANSWER}"
