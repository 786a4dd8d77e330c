"""Retention: the policy, policy.json, and what restic's forget keeps (pure,
with a fake clock; tests/backups/test_restic.py runs the same against restic)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from roost.backups.retention import (
    DEFAULT,
    Policy,
    PolicyError,
    barman_retention,
    dump_policies,
    keep,
    parse_policies,
    policy_for,
    policy_from,
    read_policies,
    restic_forget_flags,
    write_policies,
)

NOW = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)


def _daily(first: date, last: date, hour: int = 3) -> list[tuple[str, datetime]]:
    """One snapshot a day at `hour` UTC, its id the date."""
    out, d = [], first
    while d <= last:
        out.append((d.isoformat(), datetime(d.year, d.month, d.day, hour, tzinfo=UTC)))
        d += timedelta(days=1)
    return out


YEAR = _daily(date(2023, 1, 1), date(2023, 12, 31))
# Written out by hand (2023-12-31 is a Sunday, the last day of ISO week 52).
LAST_30_DAYS = {date(2023, 12, d).isoformat() for d in range(2, 32)}
LAST_12_SUNDAYS = {
    "2023-12-31", "2023-12-24", "2023-12-17", "2023-12-10", "2023-12-03", "2023-11-26",
    "2023-11-19", "2023-11-12", "2023-11-05", "2023-10-29", "2023-10-22", "2023-10-15",
}  # fmt: skip
MONTH_ENDS = {
    "2023-01-31", "2023-02-28", "2023-03-31", "2023-04-30", "2023-05-31", "2023-06-30",
    "2023-07-31", "2023-08-31", "2023-09-30", "2023-10-31", "2023-11-30", "2023-12-31",
}  # fmt: skip


def test_a_year_of_dailies_under_the_default_policy_keeps_each_bucket_exactly() -> None:
    kept = keep(YEAR, DEFAULT, NOW)
    assert kept == LAST_30_DAYS | LAST_12_SUNDAYS | MONTH_ENDS
    # 30 days, 7 more Sundays (5 are in the 30 days), 11 more month ends.
    assert len(kept) == 30 + 7 + 11


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # within 1 day of the newest (12-31 03:00): only it (12-30 03:00 is not after the cutoff)
        (Policy(pitr_days=1, daily=0, weekly=0, monthly=0), {"2023-12-31"}),
        (
            Policy(pitr_days=7, daily=0, weekly=0, monthly=0),
            {f"2023-12-{d}" for d in range(25, 32)},
        ),
        (Policy(pitr_days=1, daily=30, weekly=0, monthly=0), LAST_30_DAYS),
        (Policy(pitr_days=1, daily=0, weekly=12, monthly=0), LAST_12_SUNDAYS),
        (Policy(pitr_days=1, daily=0, weekly=0, monthly=12), MONTH_ENDS),
        (
            Policy(pitr_days=1, daily=0, weekly=0, monthly=3),
            {"2023-12-31", "2023-11-30", "2023-10-31"},
        ),
    ],
)
def test_each_rule_alone(policy: Policy, expected: set[str]) -> None:
    assert keep(YEAR, policy, NOW) == expected


def test_within_counts_back_from_the_newest_snapshot_not_the_clock() -> None:
    # A month after the last backup, the window still holds the last 7 days of backups.
    assert len(keep(YEAR, Policy(7, 0, 0, 0), NOW + timedelta(days=30))) == 7


def test_a_snapshot_dated_in_the_future_does_not_move_the_window() -> None:
    future = ("future", datetime(2024, 6, 1, tzinfo=UTC))
    kept = keep([*YEAR, future], Policy(pitr_days=7, daily=0, weekly=0, monthly=0), NOW)
    assert kept == {f"2023-12-{d}" for d in range(25, 32)} | {"future"}


def test_the_newest_of_several_a_day_is_that_days_snapshot() -> None:
    snaps = [
        (f"{d}-{h}", datetime(2023, 3, d, h, tzinfo=UTC)) for d in range(1, 11) for h in (1, 9, 17)
    ]
    kept = keep(snaps, Policy(pitr_days=1, daily=5, weekly=0, monthly=0), NOW)
    # within: day 10 (all three; day 9 17:00 is exactly the cutoff); daily: days 6-10 at 17:00
    assert kept == {"10-1", "10-9", "10-17", "9-17", "8-17", "7-17", "6-17"}


def test_weeks_are_iso_weeks_across_a_new_year() -> None:
    snaps = _daily(date(2020, 12, 28), date(2021, 1, 10))
    # 2021-01-01..03 belong to ISO week 53 of 2020, which ends on Sunday 2021-01-03.
    kept = keep(snaps, Policy(pitr_days=1, daily=0, weekly=3, monthly=0), NOW)
    assert kept == {"2021-01-10", "2021-01-03"}


def test_months_are_those_of_the_snapshots_own_offset() -> None:
    plus2 = timezone(timedelta(hours=2))
    # a: 1 June at +02:00 is still 31 May in UTC; b: 20 May either way.
    a, b = datetime(2023, 6, 1, 1, 0, tzinfo=plus2), datetime(2023, 5, 20, 12, 0, tzinfo=plus2)
    monthly = Policy(pitr_days=1, daily=0, weekly=0, monthly=5)
    assert keep([("a", a), ("b", b)], monthly, NOW) == {"a", "b"}  # June and May
    as_utc = [("a", a.astimezone(UTC)), ("b", b.astimezone(UTC))]
    assert keep(as_utc, monthly, NOW) == {"a"}  # both May


def test_nothing_to_keep_from_nothing() -> None:
    assert keep([], DEFAULT, NOW) == set()


def test_flags_and_barman_window() -> None:
    assert restic_forget_flags(DEFAULT) == [
        "--keep-within", "7d", "--keep-daily", "30", "--keep-weekly", "12", "--keep-monthly", "12",
    ]  # fmt: skip
    assert restic_forget_flags(Policy(3, 0, 4, 0)) == ["--keep-within", "3d", "--keep-weekly", "4"]
    assert barman_retention(DEFAULT) == "RECOVERY WINDOW OF 7 DAYS"
    assert (
        barman_retention(Policy(pitr_days=3), Policy(pitr_days=14)) == "RECOVERY WINDOW OF 14 DAYS"
    )
    assert barman_retention() == "RECOVERY WINDOW OF 7 DAYS"


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"pitr_days": 0}, "pitr_days must be between 1 and 3650"),
        ({"daily": -1}, "daily must be between 0 and 3650"),
        ({"weekly": 10_000}, "weekly must be between 0 and 520"),
        ({"monthly": 1.5}, "monthly must be a whole number"),
        ({"daily": True}, "daily must be a whole number"),
        ({"pitr_days": "7"}, "pitr_days must be a whole number"),
    ],
)
def test_bad_policies_are_refused_naming_the_field(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(PolicyError, match=says):
        Policy(**kwargs)  # type: ignore[arg-type]


def test_policy_json_round_trip_and_defaults(tmp_path: Path) -> None:
    policies = {"shop": Policy(14, 60, 8, 24), "blog": Policy(pitr_days=3)}
    assert parse_policies(dump_policies(policies)) == policies
    assert policy_for(policies, "shop") == Policy(14, 60, 8, 24)
    assert policy_for(policies, "other") == DEFAULT
    assert parse_policies('{"apps": {"a": {"daily": 5}}}') == {"a": Policy(daily=5)}
    path = tmp_path / "policy.json"
    assert read_policies(path) == {}
    write_policies(path, policies)
    assert read_policies(path) == policies
    assert [p.name for p in tmp_path.iterdir()] == ["policy.json"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("not json", "policy.json is not JSON"),
        ('{"apps": []}', "must be"),
        ('{"apps": {}, "extra": 1}', "must be"),
        ('{"apps": {"shop": {"dialy": 5}}}', "policy of shop: unknown field.*dialy"),
        ('{"apps": {"shop": {"daily": -5}}}', "policy of shop: daily must be between"),
        ('{"apps": {"shop": 7}}', "policy of shop: expected an object"),
    ],
)
def test_bad_policy_json_is_refused(text: str, says: str) -> None:
    with pytest.raises(PolicyError, match=says):
        parse_policies(text)


def test_policy_from_a_request() -> None:
    assert policy_from({"pitr_days": 10, "monthly": 0}) == Policy(pitr_days=10, monthly=0)
    with pytest.raises(PolicyError, match="policy: unknown field"):
        policy_from({"yearly": 2})
