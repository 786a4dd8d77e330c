"""`roost hosts drain --wait` (and `roost cluster upgrade`) read /api/hosts rows."""

from __future__ import annotations

from typing import Any

from roost.cli import hosts


def row(instances: int, note: str = "", seen_s_ago: float = 0.0, drained: bool = True) -> Any:
    return {
        "host_id": "10.0.0.21",
        "drained": drained,
        "instances": instances,
        "drain_note": note,
        "seen_s_ago": seen_s_ago,
    }


def test_a_row_becomes_what_the_verdict_takes() -> None:
    seen = hosts.seen_drain([row(2, "x", seen_s_ago=1.5)], "10.0.0.21", 100.0)
    assert seen is not None
    assert (seen.drained, seen.instances, seen.note, seen.beat_at) == (True, 2, "x", 98.5)
    assert hosts.seen_drain([row(2)], "10.0.0.22", 100.0) is None


def test_wait_drained_follows_the_rows_until_the_host_is_empty(monkeypatch: Any) -> None:
    monkeypatch.setattr(hosts, "LOOK_EVERY_S", 0.0)
    rows = iter([[row(2)], [row(1, "no other host has room for a web.1")], [row(0)]])
    said: list[str] = []
    verdict = hosts.wait_drained(lambda: next(rows), "10.0.0.21", 0.0, 60.0, said.append)
    assert verdict.state == "healthy"
    assert said == [
        "it still holds 2 instance(s)",
        "it still holds 1 instance(s): no other host has room for a web.1",
    ]


def test_wait_drained_fails_at_its_timeout_saying_what_is_stuck(monkeypatch: Any) -> None:
    monkeypatch.setattr(hosts, "LOOK_EVERY_S", 0.0)
    verdict = hosts.wait_drained(
        lambda: [row(1, "no other host has room for a web.1")], "10.0.0.21", 0.0, 0.0
    )
    assert verdict.state == "failed" and "no other host has room" in verdict.why
