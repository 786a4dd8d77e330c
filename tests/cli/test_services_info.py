"""`roost services info`: how a service's limits and use are shown."""

from __future__ import annotations

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
