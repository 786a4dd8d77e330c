"""The backup schedule: a pure function of a fake clock, what exists and what ran."""

from __future__ import annotations

import calendar
from pathlib import Path

import pytest

from roost.backups.catalog import Record
from roost.backups.daemon import build
from roost.backups.layout import Layout
from roost.backups.schedule import (
    DAY_S,
    Cadence,
    Job,
    Run,
    Sources,
    due,
    last_slot,
    next_wake,
    runs_from,
    wanted,
)
from roost.settings import Settings
from roost.wire.messages import BackupEntry

HOUR = 3600.0
CADENCE = Cadence(hour=3, redis_s=6 * HOUR, check_s=7 * DAY_S, retry_s=600.0)


def utc(day: int, hour: int, minute: int = 0) -> float:
    return float(calendar.timegm((2026, 3, day, hour, minute, 0, 0, 0, 0)))


def test_what_is_wanted_follows_what_the_sources_hold() -> None:
    src = Sources(clusters=("svc1",), databases=("a",), redis=("a", "b"), data=("b",), git=("a",))
    assert set(wanted(src)) == {
        Job("pgbase", host="svc1"),
        Job("archive-wal", host="svc1"),
        Job("pgdump", "a"),
        Job("redis", "a"),
        Job("redis", "b"),
        Job("data", "b"),
        Job("git", "a"),
        Job("platform"),
        Job("retention"),
        Job("check"),
    }
    assert Job("platform") not in wanted(Sources(platform=False))


def test_the_last_slot_is_todays_hour_once_passed_else_yesterdays() -> None:
    assert last_slot(utc(10, 3), 3) == utc(10, 3)
    assert last_slot(utc(10, 2, 59), 3) == utc(9, 3)
    assert last_slot(utc(10, 23), 3) == utc(10, 3)
    assert last_slot(utc(1, 0), 23) == utc(1, 0) - HOUR  # across a month's start


def test_each_cluster_s_wal_is_archived_every_few_minutes() -> None:
    jobs = wanted(Sources(clusters=("svc1", "svc2"), platform=False))
    archive = [j for j in jobs if j.kind == "archive-wal"]
    assert archive == [Job("archive-wal", host="svc1"), Job("archive-wal", host="svc2")]
    t = utc(10, 12)
    assert set(due(t, CADENCE, archive, {})) == set(archive)  # at once after a start
    runs = {archive[0]: Run(t, True), archive[1]: Run(t + 60, True)}
    # Not again before `archive_s` (300 s), between the nights as at them.
    assert due(t + 299, CADENCE, archive, runs) == []
    assert due(t + 300, CADENCE, archive, runs) == [archive[0]]
    assert due(t + 400, CADENCE, archive, runs) == archive
    assert next_wake(t + 10, CADENCE, archive, runs) == t + 300
    # A failed one is tried again after retry_s, as any job.
    failed = {archive[0]: Run(t, False)}
    assert due(t + 599, CADENCE, archive[:1], failed) == []
    assert due(t + 600, CADENCE, archive[:1], failed) == archive[:1]
    with pytest.raises(ValueError, match="positive"):
        Cadence(archive_s=0)


def test_a_job_never_run_is_due_at_once() -> None:
    jobs = wanted(Sources(databases=("a",)))
    assert set(due(utc(10, 12), CADENCE, jobs, {})) == set(jobs)


def test_nightly_dumps_run_at_the_hour_after_their_last_success() -> None:
    job = Job("pgdump", "a")
    runs = {job: Run(utc(10, 3, 5), ok=True)}
    assert due(utc(10, 12), CADENCE, [job], runs) == []
    assert due(utc(11, 2, 59), CADENCE, [job], runs) == []
    assert due(utc(11, 3), CADENCE, [job], runs) == [job]
    # a capture during the day (before a release) counts for that day
    runs = {job: Run(utc(11, 10), ok=True)}
    assert due(utc(11, 23), CADENCE, [job], runs) == []
    assert due(utc(12, 3), CADENCE, [job], runs) == [job]
    # a backup from days ago is due now, once
    assert due(utc(15, 1), CADENCE, [job], {job: Run(utc(11, 3), True)}) == [job]


def test_redis_is_pulled_every_n_hours_and_checks_are_weekly() -> None:
    redis, check = Job("redis", "a"), Job("check")
    runs = {redis: Run(utc(10, 1), True), check: Run(utc(10, 1), True)}
    assert due(utc(10, 6, 59), CADENCE, [redis, check], runs) == []
    assert due(utc(10, 7), CADENCE, [redis, check], runs) == [redis]
    assert due(utc(17, 1), CADENCE, [redis, check], runs) == [redis, check]


def test_a_failure_is_tried_again_after_the_retry_delay_not_the_next_night() -> None:
    job = Job("pgbase", host="svc1")
    runs = {job: Run(utc(10, 3), ok=False)}
    assert due(utc(10, 3) + 599, CADENCE, [job], runs) == []
    assert due(utc(10, 3) + 600, CADENCE, [job], runs) == [job]


def test_the_longest_overdue_goes_first() -> None:
    a, b, c = Job("pgdump", "a"), Job("redis", "b"), Job("data", "c")
    runs = {a: Run(utc(8, 3), True), b: Run(utc(10, 1), True)}
    assert due(utc(10, 12), CADENCE, [a, b, c], runs) == [c, a, b]


def test_next_wake_is_the_earliest_due_time() -> None:
    a, r = Job("pgdump", "a"), Job("redis", "a")
    runs = {a: Run(utc(10, 3), True), r: Run(utc(10, 4), True)}
    assert next_wake(utc(10, 5), CADENCE, [a, r], runs) == utc(10, 10)
    assert next_wake(utc(10, 5), CADENCE, [a], runs) == utc(11, 3)
    assert next_wake(utc(10, 5), CADENCE, [], {}) == utc(11, 5)  # at most a day
    assert next_wake(utc(10, 5), CADENCE, [Job("git", "x")], {}) == utc(10, 5)


def _rec(kind: str, app: str, at: float, state: str, source: str = "") -> Record:
    entry = BackupEntry(id=f"{kind}-x", app=app, kind=kind, taken_at=at, state=state)  # type: ignore[arg-type]
    return Record(entry=entry, source=source)


def test_runs_come_from_the_catalog_a_failed_drill_counting_as_a_failure() -> None:
    records = [
        _rec("pgdump", "a", utc(9, 3), "verified"),
        _rec("pgdump", "a", utc(10, 3), "failed"),
        _rec("redis", "a", utc(10, 1), "taken"),
        _rec("pgbase", "", utc(10, 3), "verified", source="svc1"),
    ]
    assert runs_from(records) == {
        Job("pgdump", "a"): Run(utc(10, 3), False),
        Job("redis", "a"): Run(utc(10, 1), True),
        Job("pgbase", host="svc1"): Run(utc(10, 3), True),
    }


def test_a_repository_without_a_commit_is_skipped_until_the_next_night() -> None:
    """Skipped (nothing to back up) is a run that ended: not retried every
    minute, and due again at the next slot."""
    runs = runs_from([_rec("git", "a", utc(10, 4), "skipped")])
    assert runs == {Job("git", "a"): Run(utc(10, 4), True)}
    assert due(utc(10, 5), CADENCE, [Job("git", "a")], runs) == []
    assert due(utc(11, 3, 1), CADENCE, [Job("git", "a")], runs) == [Job("git", "a")]


def test_a_bad_cadence_is_refused() -> None:
    with pytest.raises(ValueError, match="0-23"):
        Cadence(hour=24)
    with pytest.raises(ValueError, match="positive"):
        Cadence(redis_s=0)


async def test_backupd_runs_archive_wal_for_the_job_s_host(tmp_path: Path) -> None:
    backupd = build(Layout(tmp_path), Settings(), None, None, None)  # type: ignore[arg-type]
    asked: list[str] = []

    async def archive(host: str) -> None:
        asked.append(host)
        if host == "down":
            raise RuntimeError("barman archive-wal down failed")

    backupd.archive_wal = archive
    ok, down = Job("archive-wal", host="svc1"), Job("archive-wal", host="down")
    assert await backupd.run_job(ok) and not await backupd.run_job(down)
    assert asked == ["svc1", "down"]
    runs = backupd._runs()
    assert runs[ok].ok and not runs[down].ok
