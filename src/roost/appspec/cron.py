"""5-field cron schedules: validation, normalisation and matching (Vixie cron rules).

A field is a comma-separated list of items; an item is `*`, `N`, `A-B`, any of
those followed by `/STEP` (`*/30`, `0-59/1`; `N/STEP` means `N-max/STEP`, as
cronie reads it). Months and weekdays also take English names (`jan`, `mon`);
weekday 7 is Sunday like 0. `@hourly`, `@daily`, `@midnight`, `@weekly`,
`@monthly`, `@yearly` and `@annually` are expanded. As in Vixie cron, when
both day-of-month and day-of-week are restricted (neither starts with `*`) a
day matches if either does.

A job's value in epio.ini's [cron] may end with `overlap=POLICY`: what to do
when a run of the job is due while an earlier run still goes on (Dokku's
app.json `concurrency_policy`, Kubernetes' `concurrencyPolicy`):
`allow` (the default, as in Dokku, Kubernetes, Heroku Scheduler and crontab):
run it anyway; `skip` (Dokku's `forbid`): record the run as skipped; `queue`:
run it once the earlier runs have ended (at most QUEUE_LIMIT wait; beyond
that a run is skipped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from roost.appspec.errors import AppSpecError, Problem

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, lowest, highest, names for lowest..)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
OVERLAPS = ("allow", "skip", "queue")
OVERLAP_PREFIX = "overlap="
_ITEM = re.compile(r"(?P<range>\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/(?P<step>[0-9]+))?$")


@dataclass(frozen=True)
class CronSchedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday .. 6
    # Vixie cron's DOM_STAR / DOW_STAR: the field starts with '*'.
    any_day: bool
    any_weekday: bool
    text: str  # the normalised 5-field form

    def matches(self, when: datetime) -> bool:
        """Whether the schedule fires in the minute `when` falls in."""
        if when.minute not in self.minutes or when.hour not in self.hours:
            return False
        if when.month not in self.months:
            return False
        day = when.day in self.days
        weekday = (when.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return day and weekday
        return day or weekday


def _value(token: str, lo: int, hi: int, names: tuple[str, ...], field: str) -> int:
    if token.isdigit():
        number = int(token)
    elif token in names:
        number = names.index(token) + lo
    else:
        raise ValueError(f"{token!r} is not a valid {field}")
    if not lo <= number <= hi:
        raise ValueError(f"{field} {number} is out of range {lo}-{hi}")
    return number


def _field(text: str, lo: int, hi: int, names: tuple[str, ...], field: str) -> set[int]:
    values: set[int] = set()
    for item in text.lower().split(","):
        m = _ITEM.match(item)
        if not m:
            raise ValueError(f"{item!r} is not a valid {field} (e.g. *, 5, 1-5, */15, 1,15)")
        part, step_text = m.group("range"), m.group("step")
        step = int(step_text) if step_text is not None else 1
        if step == 0 or step > hi - lo + 1:
            raise ValueError(f"step /{step_text} is out of range for the {field}")
        if part == "*":
            first, last = lo, hi
        elif "-" in part:
            a, b = part.split("-", 1)
            first, last = _value(a, lo, hi, names, field), _value(b, lo, hi, names, field)
            if first > last:
                raise ValueError(f"range {part!r} runs backwards")
        else:
            first = _value(part, lo, hi, names, field)
            last = hi if step_text is not None else first
        values.update(range(first, last + 1, step))
    return values


def parse_schedule(text: str) -> CronSchedule:
    """Parse a 5-field spec or an @macro; AppSpecError says what is wrong."""
    spec = MACROS.get(text.strip().lower(), text)
    fields = spec.split()
    if len(fields) != 5:
        raise AppSpecError(
            Problem(
                f"{text!r} is not a cron schedule: it needs 5 fields "
                "(minute hour day-of-month month day-of-week), e.g. */30 * * * *"
            )
        )
    try:
        parsed = [
            _field(f, lo, hi, names, name)
            for f, (name, lo, hi, names) in zip(fields, _FIELDS, strict=True)
        ]
    except ValueError as exc:
        raise AppSpecError(Problem(f"cron schedule {text!r}: {exc}")) from None
    weekdays = frozenset(d % 7 for d in parsed[4])
    return CronSchedule(
        minutes=frozenset(parsed[0]),
        hours=frozenset(parsed[1]),
        days=frozenset(parsed[2]),
        months=frozenset(parsed[3]),
        weekdays=weekdays,
        any_day=fields[2].startswith("*"),
        any_weekday=fields[4].startswith("*"),
        text=" ".join(fields),
    )


def split_overlap(value: str) -> tuple[str, str]:
    """`'*/5 * * * * overlap=skip'` -> `('*/5 * * * *', 'skip')`; 'allow' when absent.

    AppSpecError for a policy that is not one of OVERLAPS.
    """
    head, _, last = value.strip().rpartition(" ")
    if not last.lower().startswith(OVERLAP_PREFIX):
        return value, "allow"
    policy = last[len(OVERLAP_PREFIX) :].lower()
    if policy not in OVERLAPS:
        raise AppSpecError(
            Problem(
                f"overlap={policy} is not a policy: use overlap=allow, overlap=skip or "
                "overlap=queue (Dokku's 'forbid' is 'skip'; 'replace' is not offered)"
            )
        )
    return head.rstrip(), policy
