"""Several backupds, each with its own history: which to ask, and what their
answers add up to (pure; controller/backups.py does the asking).

A platform may run two backupds, for two locations. They are not copies
of one another: each pulls on its own schedule, keeps its own catalog and
repositories, and may hold backups the other lacks (it was down, or its
drill failed). So the controller asks each one separately, never "any
replica", and:

  capture   goes to every backupd at once; it succeeded when at least one
            took it (each failure is logged and a platform event), and
            failed, the change refused, only when every one failed;
  list      merges what every backupd that answered holds, each entry
            naming its backupd; one that did not answer is a line of its
            own ("unreachable"), never left out;
  restore   by id: the backupd holding that backup; at a time: the first
            (address-book order) whose point-in-time window holds it;
  policy    is set on every one;
  health    per app: fine when any backupd holds a recent verified backup
            of each kind; a backupd in trouble is named in the message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import msgspec

from roost.wire.messages import BackupEntry, BackupList


def stamped(backupd: str, entries: Iterable[BackupEntry]) -> list[BackupEntry]:
    """`entries` as held by `backupd`."""
    return [msgspec.structs.replace(e, backupd=backupd) for e in entries]


@dataclass(frozen=True)
class Listing:
    """What the backupds said about an app (or every app), merged."""

    # backupd -> its answer, in address-book order
    lists: Mapping[str, BackupList] = field(default_factory=dict)
    # backupd -> why it did not answer
    unreachable: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def of(one: BackupList, backupd: str = "") -> Listing:
        return Listing({backupd: one})

    @property
    def entries(self) -> list[BackupEntry]:
        """Every backupd's entries, each naming its backupd, oldest first."""
        out = [e for name, lst in self.lists.items() for e in stamped(name, lst.entries)]
        return sorted(out, key=lambda e: (e.taken_at, e.backupd, e.id))

    @property
    def windows(self) -> dict[str, tuple[float, float]]:
        """backupd -> its point-in-time window of the app's database (those with one)."""
        return {n: (lst.pitr_from, lst.pitr_to) for n, lst in self.lists.items() if lst.pitr_from}

    @property
    def pitr_from(self) -> float:
        return min((f for f, _ in self.windows.values()), default=0.0)

    @property
    def pitr_to(self) -> float:
        return max((t for _, t in self.windows.values()), default=0.0)

    def window_holder(self, when: float) -> str | None:
        """The first backupd whose window holds `when`."""
        return next((n for n, (f, t) in self.windows.items() if f <= when < t), None)

    def holder(self, app: str, backup_id: str) -> str | None:
        """The backupd holding `app`'s backup `backup_id` (a usable one first)."""
        held = [
            (e.state in ("failed", "skipped"), n)
            for n, lst in self.lists.items()
            for e in lst.entries
            if e.id == backup_id and e.app == app
        ]
        return min(held)[1] if held else None

    def status(self) -> dict[str, str]:
        """backupd -> "ok", or "unreachable: why" (address-book order kept)."""
        out = dict.fromkeys(self.lists, "ok")
        out.update({n: f"unreachable: {why}" for n, why in self.unreachable.items()})
        return out


@dataclass(frozen=True)
class Captured:
    """What a capture on every backupd came to."""

    entries: list[BackupEntry]  # from each backupd that took it, naming it
    took: list[str]  # the backupds that took it
    failures: dict[str, str]  # backupd -> why it did not

    @property
    def ok(self) -> bool:
        return bool(self.took)


def captured(answers: Mapping[str, list[BackupEntry] | str]) -> Captured:
    """Each backupd's answer to a capture (its entries, or why it gave none):
    a backupd took it when none of its entries failed."""
    entries: list[BackupEntry] = []
    took: list[str] = []
    failures: dict[str, str] = {}
    for name, answer in answers.items():
        if isinstance(answer, str):
            failures[name] = answer
            continue
        failed = [e for e in answer if e.state == "failed"]
        if failed:
            failures[name] = "; ".join(f"{e.kind}: {e.message}" for e in failed)
        else:
            took.append(name)
        entries += stamped(name, answer)
    return Captured(entries, took, failures)


def to_ask(
    names: Iterable[str], down: Mapping[str, tuple[float, str]], now: float
) -> tuple[list[str], dict[str, str]]:
    """(the backupds to ask now, those not: backupd -> why). One that did not
    answer a listing is not asked again until its time in `down` (backupd ->
    (until, why)) passes: every listing would wait out its timeout while the
    others have answered. With none left to ask, all are asked: there is no
    answer to show without them."""
    names = list(names)
    skip = {n: down[n][1] for n in names if n in down and now < down[n][0]}
    ask = [n for n in names if n not in skip]
    return (ask, skip) if ask else (names, {})


# A backupd's health for an app, best first: the app's is its best backupd's.
BEST_FIRST = ("ok", "pending", "stale", "none", "failed")


def best_of(per_backupd: Mapping[str, tuple[str, float, str]]) -> tuple[str, float, str]:
    """An app's (state, verified_at, message) from each backupd's: the best
    backupd's state and time; the message names every backupd not fine."""
    name, (state, verified_at, message) = min(
        per_backupd.items(), key=lambda kv: (BEST_FIRST.index(kv[1][0]), -kv[1][1])
    )
    if len(per_backupd) == 1:
        return state, verified_at, message
    notes = [message] if message else []
    notes += [
        f"{n}: {s}" + (f" ({m})" if m else "")
        for n, (s, _, m) in per_backupd.items()
        if n != name and s != "ok"
    ]
    return state, verified_at, "; ".join(notes)
