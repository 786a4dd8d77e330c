"""Choosing an instance: least outstanding requests, round-robin among equals,
with passive health checks.

Theory of operation: every backend address has one `Slot` per worker holding
its live state (requests in flight, consecutive failures, ejection deadline
and its pool of idle connections). Slots outlive route tables: a table swap
rebinds entries to the same slots, so counts, pools and ejections survive
churn. A slot no longer referenced by any entry is retired once idle.

`pick` is pure over slots and a clock value. A slot with `max_fails`
consecutive failures (connect refused/timeout, reset before a response) is
ejected for `eject_s`; while every remaining slot is ejected we still try the
one whose ejection ends first rather than refuse outright.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from roost.router.table import AppEntry
from roost.wire.messages import Backend

SlotKey = tuple[str, str, int, str]


class Slot:
    __slots__ = (
        "backend",
        "ejected_until",
        "fails",
        "idle",
        "key",
        "label",
        "outstanding",
        "retired",
    )

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.label = backend.instance_id.encode()  # for the access log
        self.key: SlotKey = slot_key(backend)
        self.outstanding = 0
        self.fails = 0
        self.ejected_until = 0.0
        self.retired = False
        # Idle pooled connections (the proxy's upstream protocol objects), LIFO.
        self.idle: list[Any] = []

    def __repr__(self) -> str:
        b = self.backend
        return (
            f"Slot({b.instance_id} {b.unix_socket or f'{b.host}:{b.port}'} out={self.outstanding})"
        )


def slot_key(b: Backend) -> SlotKey:
    return (b.instance_id, b.host, b.port, b.unix_socket)


def pick(
    slots: Sequence[Slot], start: int, now: float, exclude: Iterable[Slot] = ()
) -> Slot | None:
    """Least outstanding among healthy slots, scanning from `start` so equals rotate."""
    n = len(slots)
    if n == 0:
        return None
    best: Slot | None = None
    fallback: Slot | None = None
    for i in range(n):
        s = slots[(start + i) % n]
        if exclude and s in exclude:
            continue
        if s.ejected_until > now:
            if fallback is None or s.ejected_until < fallback.ejected_until:
                fallback = s
            continue
        if best is None or s.outstanding < best.outstanding:
            best = s
            if s.outstanding == 0:
                break  # cannot do better; keeps strict rotation when idle
    return best if best is not None else fallback


def record_failure(slot: Slot, now: float, max_fails: int, eject_s: float) -> bool:
    """Count a failure; True when it ejects the slot."""
    slot.fails += 1
    if slot.fails >= max(1, max_fails):
        slot.fails = 0
        slot.ejected_until = now + eject_s
        return True
    return False


def record_success(slot: Slot) -> None:
    slot.fails = 0
    slot.ejected_until = 0.0


class Balancer:
    """The worker's slots, bound to each entry of the current table."""

    __slots__ = ("eject_s", "max_fails", "slots")

    def __init__(self, max_fails: int = 1, eject_s: float = 10.0) -> None:
        self.max_fails = max_fails
        self.eject_s = eject_s
        self.slots: dict[SlotKey, Slot] = {}

    def slots_for(self, entry: AppEntry) -> list[Slot]:
        slots: list[Slot] | None = entry.slots
        if slots is None:
            slots = []
            for b in entry.backends:
                key = slot_key(b)
                s = self.slots.get(key)
                if s is None or s.retired:
                    s = self.slots[key] = Slot(b)
                slots.append(s)
            entry.slots = slots
        return slots

    def choose(self, entry: AppEntry, now: float, exclude: Iterable[Slot] = ()) -> Slot | None:
        slots = entry.slots
        if slots is None:
            slots = self.slots_for(entry)
        start = entry.rr
        entry.rr = start + 1
        if not exclude and len(slots) == 1 and slots[0].ejected_until <= now:
            return slots[0]  # the common small app: nothing to compare
        return pick(slots, start, now, exclude)

    def failed(self, slot: Slot, now: float) -> bool:
        return record_failure(slot, now, self.max_fails, self.eject_s)

    def retire_unused(self, gone: list[AppEntry], came: list[AppEntry]) -> list[Slot]:
        """Forget slots of backends that left with a table change; returns them
        so their pools get closed. Instances belong to one app, so the changed
        entries (see `table.changed_entries`) are all that can drop a backend."""
        before = {slot_key(b) for e in gone for b in e.backends}
        after = {slot_key(b) for e in came for b in e.backends}
        out: list[Slot] = []
        for key in before - after:
            s = self.slots.pop(key, None)
            if s is not None:
                s.retired = True
                out.append(s)
        return out
