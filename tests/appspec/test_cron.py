"""5-field cron specs: what is accepted, what is refused, and when a job fires."""

from __future__ import annotations

from datetime import datetime

import pytest

from roost.appspec.cron import parse_schedule, split_overlap
from roost.appspec.errors import AppSpecError


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("*/30 * * * *", "*/30 * * * *"),
        ("0-59/1 * * * *", "0-59/1 * * * *"),
        ("01 04 * * *", "01 04 * * *"),
        ("0 0 * * *", "0 0 * * *"),
        ("  0   9 1,15 * mon-fri ", "0 9 1,15 * mon-fri"),
        ("@daily", "0 0 * * *"),
        ("@HOURLY", "0 * * * *"),
        ("5/15 * * jan-mar,DEC 7", "5/15 * * jan-mar,DEC 7"),
    ],
)
def test_valid_schedules(text: str, normalised: str) -> None:
    assert parse_schedule(text).text == normalised


def test_field_values() -> None:
    s = parse_schedule("*/30 1-3,12 1 jan,jun sun")
    assert s.minutes == {0, 30}
    assert s.hours == {1, 2, 3, 12}
    assert s.months == {1, 6}
    assert s.weekdays == {0}
    assert parse_schedule("5/20 * * * *").minutes == {5, 25, 45}
    assert parse_schedule("* * * * 7").weekdays == {0}  # 7 is Sunday too


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("*/5 * * *", "5 fields"),
        ("* * * * * *", "5 fields"),
        ("", "5 fields"),
        ("60 * * * *", "out of range"),
        ("* 24 * * *", "out of range"),
        ("* * 0 * *", "out of range"),
        ("* * * 13 *", "out of range"),
        ("* * * * 8", "out of range"),
        ("*/0 * * * *", "step"),
        ("*/61 * * * *", "step"),
        ("5-1 * * * *", "backwards"),
        ("a * * * *", "not a valid minute"),
        ("* * * * funday", "not a valid day of week"),
        ("1,,2 * * * *", "not a valid minute"),
        ("%d * * * *", "not a valid minute"),
        ("@reboot", "5 fields"),
    ],
)
def test_invalid_schedules(text: str, words: str) -> None:
    with pytest.raises(AppSpecError) as info:
        parse_schedule(text)
    assert words in str(info.value)


def test_matching() -> None:
    every_half_hour = parse_schedule("*/30 * * * *")
    assert every_half_hour.matches(datetime(2024, 5, 1, 10, 30))
    assert not every_half_hour.matches(datetime(2024, 5, 1, 10, 31))
    four_oh_one = parse_schedule("01 04 * * *")
    assert four_oh_one.matches(datetime(2024, 5, 1, 4, 1))
    assert not four_oh_one.matches(datetime(2024, 5, 1, 5, 1))


def test_day_of_month_and_weekday_combine_like_vixie_cron() -> None:
    # Both restricted: either matches. 2024-05-03 is a Friday, 2024-05-13 a Monday.
    either = parse_schedule("0 0 13 * fri")
    assert either.matches(datetime(2024, 5, 3))
    assert either.matches(datetime(2024, 5, 13))
    assert not either.matches(datetime(2024, 5, 14))
    # One of them is '*': both must match.
    both = parse_schedule("0 0 */2 * fri")
    assert not both.matches(datetime(2024, 5, 13))
    assert both.matches(datetime(2024, 5, 3))
    assert not both.matches(datetime(2024, 5, 10))


@pytest.mark.parametrize(
    ("value", "schedule", "policy"),
    [
        ("*/5 * * * *", "*/5 * * * *", "allow"),
        ("*/5 * * * * overlap=skip", "*/5 * * * *", "skip"),
        ("@daily  OVERLAP=Queue", "@daily", "queue"),
        ("0 3 * * * overlap=allow", "0 3 * * *", "allow"),
    ],
)
def test_overlap_policy_ends_the_value(value: str, schedule: str, policy: str) -> None:
    assert split_overlap(value) == (schedule, policy)


@pytest.mark.parametrize("value", ["* * * * * overlap=forbid", "* * * * * overlap=", "overlap=x"])
def test_unknown_overlap_policy_is_refused(value: str) -> None:
    with pytest.raises(AppSpecError) as info:
        split_overlap(value)
    assert "overlap=skip" in str(info.value)
