"""`roost services info`: how a service's limits and use are shown."""

from __future__ import annotations

from roost.cli.apps import data_line
from roost.cli.services import limit_lines


def test_postgres_connections() -> None:
    lines = limit_lines({"kind": "postgres", "connection_limit": 20, "connections": 3})
    assert lines == [("connections", "3 open, at most 20")]
    assert limit_lines({"connection_limit": -1, "connections": 0}) == [
        ("connections", "0 open, no limit")
    ]


def test_redis_memory_and_eviction() -> None:
    lines = limit_lines(
        {
            "kind": "redis",
            "memory_limit_bytes": 16 << 20,
            "memory_used_bytes": 1 << 20,
            "eviction_policy": "volatile-lru",
        }
    )
    assert lines == [
        ("memory", "1.0 MB used of 16.0 MB (maxmemory)"),
        (
            "eviction",
            "volatile-lru: when full, keys with a TTL are evicted, least recently used first",
        ),
    ]


def test_nothing_reported_shows_nothing() -> None:
    assert limit_lines({"kind": "redis", "host": "127.0.0.1"}) == []


def test_snapshots_off_for_lack_of_disk_are_shown_in_red_and_kept_copies_listed() -> None:
    problem = "snapshots off: a snapshot of 900 MiB would not fit in the 300 MiB free"
    data = {
        "kind": "redis",
        "snapshot_problem": problem,
        "kept": [
            {"app": "a", "kind": "redis", "name": "kept/a/redis-r1", "kept_at": 1_780_000_000}
        ],
    }
    assert limit_lines(data) == [
        ("snapshots", f"[bold red]{problem}[/]"),
        ("kept", "kept/a/redis-r1: what a restore replaced, since 2026-05-28 20:26 UTC"),
    ]
    assert limit_lines({"kind": "redis", "snapshot_problem": ""}) == [("snapshots", "on")]


def test_the_standby_is_shown_even_when_there_is_none() -> None:
    # (the holder itself is one of the plain fields: "holder: 10.0.0.41")
    assert limit_lines({"holder": "10.0.0.41", "standby": ""}) == [
        ("standby", "none (one servicehost holds it)")
    ]
    assert limit_lines({"standby": "10.0.0.42"}) == [("standby", "10.0.0.42")]


def test_ps_ends_with_the_data_directorys_use_under_its_quota() -> None:
    assert data_line({"kind": "data", "quota_bytes": 6 << 20, "used_bytes": 1 << 20}) == (
        "data: 1.0 MB used of 6.0 MB"
    )
    full = data_line({"kind": "data", "quota_bytes": 6 << 20, "used_bytes": 7 << 20})
    assert full.startswith("data: 7.0 MB used of 6.0 MB") and "ENOSPC" in full
    assert data_line({"kind": "data", "quota_bytes": 0, "used_bytes": 0}) == ""
