from __future__ import annotations

from datetime import UTC, datetime

from roost.controller.cron import Job, due, slot_of


def _ts(y: int, mo: int, d: int, h: int, mi: int, s: int = 0) -> float:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC).timestamp()


EVERY_5 = Job("app", "./manage.py sync", "*/5 * * * *")
DAILY = Job("app", "django-admin.py cleanup", "0 0 * * *")


def test_due_in_window_only() -> None:
    got = due([EVERY_5], _ts(2026, 1, 1, 10, 0, 30), _ts(2026, 1, 1, 10, 12, 0), max_catchup=60)
    assert [d.slot for d in got] == [
        slot_of(_ts(2026, 1, 1, 10, 5)),
        slot_of(_ts(2026, 1, 1, 10, 10)),
    ]


def test_a_slot_is_due_once_across_consecutive_windows() -> None:
    t0 = _ts(2026, 1, 1, 10, 4, 50)
    first = due([EVERY_5], t0, t0 + 5)  # 10:04:50 -> 10:04:55
    second = due([EVERY_5], t0 + 5, t0 + 15)  # -> 10:05:05
    third = due([EVERY_5], t0 + 15, t0 + 25)
    assert first == [] and len(second) == 1 and third == []


def test_catchup_is_bounded() -> None:
    got = due(
        [Job("a", "x", "* * * * *")], _ts(2026, 1, 1, 0, 0), _ts(2026, 1, 2, 0, 0), max_catchup=5
    )
    assert len(got) == 5


def test_midnight_job_and_invalid_schedule() -> None:
    bad = Job("a", "y", "not a schedule")
    got = due([DAILY, bad], _ts(2026, 1, 1, 23, 59, 30), _ts(2026, 1, 2, 0, 0, 30))
    assert [d.job for d in got] == [DAILY]


def test_job_key_is_stable_and_distinct() -> None:
    assert EVERY_5.key == Job("other-app", "./manage.py sync", "*/5 * * * *").key
    assert EVERY_5.key != Job("app", "./manage.py sync", "*/10 * * * *").key
