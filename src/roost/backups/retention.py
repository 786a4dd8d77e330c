"""Retention: how much history backupd keeps per app (pure, plus policy.json).

A `Policy` is what `BackupPolicySet` carries: point-in-time recovery for
`pitr_days`, then the last snapshot of each of the most recent `daily` days,
`weekly` ISO weeks and `monthly` months that have one. backupd applies it
itself, never the hosts it backs up:

  restic    `restic forget` with `restic_forget_flags(policy)`, once per
            app+kind group (`--keep-within Nd` keeps every snapshot of the
            window, so the logical dumps cover it too);
  Barman    `retention_policy = barman_retention(...)`, the widest window of
            the apps on that PostgreSQL cluster.

`keep()` says which snapshots restic 0.14's forget keeps, rule for rule
(internal/restic/snapshot_policy.go): newest first; "within" counts back from
the newest snapshot that is not in the future (so `now` matters only for
snapshots dated after it); a snapshot is the one kept for its day, week or
month when it is the newest of that bucket and the bucket's count is not used
up; days, weeks and months are those of the snapshot's own recorded offset
(UTC for backupd's, which runs restic with TZ=UTC). Snapshots with the same
time are ordered by id, where restic keeps its listing order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

# Bounds a policy's fields may take (a typo like daily=3000000 is refused).
LIMITS = {"pitr_days": (1, 3650), "daily": (0, 3650), "weekly": (0, 520), "monthly": (0, 1200)}


class PolicyError(ValueError):
    """A retention policy that cannot be applied (says which field and why)."""


@dataclass(frozen=True)
class Policy:
    pitr_days: int = 7
    daily: int = 30
    weekly: int = 12
    monthly: int = 12

    def __post_init__(self) -> None:
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if type(value) is not int:
                raise PolicyError(f"{name} must be a whole number, not {value!r}")
            if not low <= value <= high:
                raise PolicyError(f"{name} must be between {low} and {high}, not {value}")


DEFAULT = Policy()


# ---------------------------------------------------------------- restic and Barman


def restic_forget_flags(policy: Policy) -> list[str]:
    flags = ["--keep-within", f"{policy.pitr_days}d"]
    for name in ("daily", "weekly", "monthly"):
        if getattr(policy, name):
            flags += [f"--keep-{name}", str(getattr(policy, name))]
    return flags


def barman_retention(*policies: Policy) -> str:
    """Barman's retention_policy for a cluster whose apps have `policies`
    (the widest window; the default policy's when there are none)."""
    return f"RECOVERY WINDOW OF {widest(policies)} DAYS"


# ---------------------------------------------------------------- what forget keeps


def _day(t: datetime) -> tuple[int, ...]:
    return (t.year, t.month, t.day)


def _week(t: datetime) -> tuple[int, ...]:
    year, week, _ = t.isocalendar()
    return (year, week)


def _month(t: datetime) -> tuple[int, ...]:
    return (t.year, t.month)


def keep(snapshots: Sequence[tuple[str, datetime]], policy: Policy, now: datetime) -> set[str]:
    """The ids `restic forget $(restic_forget_flags(policy))` keeps of one
    group's (id, time) snapshots, at `now` (see the module doc)."""
    if not snapshots:
        return set()
    ordered = sorted(snapshots, key=lambda s: (s[1], s[0]), reverse=True)
    past = [t for _, t in ordered if t < now]
    # restic's zero time when every snapshot is in the future: all are "within".
    cutoff = max(past) - timedelta(days=policy.pitr_days) if past else None
    rules = ((_day, policy.daily), (_week, policy.weekly), (_month, policy.monthly))
    left = [count for _, count in rules]
    last: list[tuple[int, ...] | None] = [None] * len(rules)
    kept = set()
    for sid, t in ordered:
        keep_it = cutoff is None or t > cutoff
        for i, (bucket, _) in enumerate(rules):
            if left[i] > 0 and bucket(t) != last[i]:
                keep_it, last[i] = True, bucket(t)
                left[i] -= 1
        if keep_it:
            kept.add(sid)
    return kept


# ---------------------------------------------------------------- policy.json


def parse_policies(text: str) -> dict[str, Policy]:
    """policy.json: {"apps": {APP: {"pitr_days": 7, "daily": 30, ...}}}."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"policy.json is not JSON: {exc}") from None
    if (
        not isinstance(doc, dict)
        or set(doc) - {"apps"}
        or not isinstance(doc.get("apps", {}), dict)
    ):
        raise PolicyError('policy.json must be {"apps": {APP: {...}}}')
    return {app: policy_from(fields_, app=app) for app, fields_ in doc.get("apps", {}).items()}


def policy_from(data: Mapping[str, Any], *, app: str = "") -> Policy:
    """A policy from a mapping (a request or policy.json); missing fields
    take the default's values, unknown ones are refused."""
    where = f"policy of {app}: " if app else "policy: "
    if not isinstance(data, Mapping):
        raise PolicyError(f"{where}expected an object, not {data!r}")
    known = {f.name for f in fields(Policy)}
    unknown = set(data) - known
    if unknown:
        raise PolicyError(f"{where}unknown field(s) {', '.join(sorted(unknown))}")
    try:
        return Policy(**{k: data[k] for k in known if k in data})
    except PolicyError as exc:
        raise PolicyError(f"{where}{exc}") from None


def dump_policies(policies: Mapping[str, Policy]) -> str:
    return (
        json.dumps({"apps": {a: asdict(p) for a, p in sorted(policies.items())}}, indent=2) + "\n"
    )


def policy_for(policies: Mapping[str, Policy], app: str) -> Policy:
    return policies.get(app, DEFAULT)


def read_policies(path: Path) -> dict[str, Policy]:
    """DATA/backupd/policy.json ({} when there is none yet)."""
    try:
        return parse_policies(path.read_text())
    except FileNotFoundError:
        return {}


def write_policies(path: Path, policies: Mapping[str, Policy]) -> None:
    """Replace policy.json atomically (a crash leaves the old or the new one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(dump_policies(policies))
    os.replace(tmp, path)


def widest(policies: Iterable[Policy]) -> int:
    """The longest point-in-time window among `policies` (days)."""
    return max((p.pitr_days for p in policies), default=DEFAULT.pitr_days)
