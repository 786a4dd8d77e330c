"""A daemon's own CPU and I/O priority, lowered for work that must yield.

backupd shares its machine with the apps it backs up whenever it is not on
a host of its own (`roost up` on one machine): its restic hashing, the
drill's scratch PostgreSQL restoring a whole database, pg_restore and
Barman's copies would otherwise take CPU and disk time from the apps as
their equals. Lowered once, at start, before any thread or child exists,
since Linux keeps niceness and I/O priority per thread and every thread and
child inherits its creator's: everything backupd runs is lowered with it.

The I/O class stays best-effort (its lowest level), not idle: an idle-class
backup on a disk that is never idle would never finish, and a backup that
never finishes is worse than a slower app.
"""

from __future__ import annotations

import ctypes
import os
import platform

# ioprio_set(2): no libc wrapper; the syscall number is per architecture.
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "armv7l": 314, "i686": 289}
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_SHIFT = 13
IOPRIO_CLASS_BE = 2
IOPRIO_BE_LOWEST = 7


def ioprio_value(klass: int, level: int) -> int:
    """The kernel's encoding of an I/O class and level (ioprio.h)."""
    if not 0 <= level <= 7:
        raise ValueError(f"I/O priority level {level} is not within 0..7")
    return (klass << _IOPRIO_CLASS_SHIFT) | level


def lower_own_priority(nice: int) -> list[str]:
    """Add `nice` to this thread's niceness and drop its I/O priority to
    best-effort's lowest. Returns what could not be done (said, not raised:
    a daemon runs at normal priority rather than not at all)."""
    problems: list[str] = []
    if nice:
        try:
            os.nice(nice)
        except OSError as exc:
            problems.append(f"niceness: {exc.strerror}")
    number = _IOPRIO_SET.get(platform.machine())
    if number is None:
        problems.append(f"I/O priority: unknown syscall on {platform.machine()}")
        return problems
    libc = ctypes.CDLL(None, use_errno=True)
    value = ioprio_value(IOPRIO_CLASS_BE, IOPRIO_BE_LOWEST)
    if libc.syscall(number, _IOPRIO_WHO_PROCESS, 0, value) != 0:
        problems.append(f"I/O priority: {os.strerror(ctypes.get_errno())}")
    return problems
