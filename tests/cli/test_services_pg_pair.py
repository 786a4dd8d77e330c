"""`roost services info postgres` for an app on a servicehost pair: primary, standby, lag."""

from __future__ import annotations

from roost.cli.services import LIMIT_KEYS, limit_lines, pg_pair_lines


def test_a_healthy_pair() -> None:
    data = {
        "kind": "postgres",
        "pg_pair": "p1",
        "pg_primary": "sh1 (10.0.0.1)",
        "pg_standby": "sh2 (10.0.0.2)",
        "pg_lag_bytes": 0,
    }
    assert pg_pair_lines(data) == [
        ("pair", "p1"),
        ("primary", "sh1 (10.0.0.1)"),
        ("standby", "sh2 (10.0.0.2)"),
        ("replication", "0 bytes behind"),
    ]
    # Shown once, as these lines, not again as raw keys.
    assert limit_lines(data)[:4] == pg_pair_lines(data)
    assert all(k in LIMIT_KEYS for k in data if k.startswith("pg_"))


def test_a_pair_that_lost_its_standby_says_so_in_red() -> None:
    data = {
        "pg_pair": "p1",
        "pg_primary": "sh2 (10.0.0.2)",
        "pg_standby": "",
        "pg_lag_bytes": -1,
        "pg_problem": "no standby: a second loss would lose the database",
    }
    lines = dict(pg_pair_lines(data))
    assert lines["standby"] == "[bold red]none[/]"
    assert lines["replication"] == "lag unknown"
    assert lines["problem"] == "[bold red]no standby: a second loss would lose the database[/]"


def test_a_database_on_one_servicehost_shows_no_pair() -> None:
    assert pg_pair_lines({"kind": "postgres", "connection_limit": 5}) == []
