"""An app suspended for its own restore is resumed once that restore is
over, whichever controller is alive then (issue 16).

Theory of operation. backupd asks a controller to suspend the app right
before it replaces the app's data (HostRestoreApp with the restore's id,
roost.backups.restore); that controller records the suspension as the
restore's, in the same transaction as the flag (store_holds.py). The
controller that asked for the restore resumes the app after it
(api/backups.py). Should that one die, or its request be cut short before
the resume, the record outlives it, and the lease holder's pass ends it:
every few seconds, while a record exists, it asks every backupd which app
restores it runs (BackupRestoresRequest) and resumes each app whose restore
none of them runs any more.

`HoldWatch.look` (pure, fake-clock tests) decides. A restore a backupd
lists runs: its app stays in maintenance, however long it takes. One that
no backupd lists is over when every backupd answered; while one is silent
(it may be the one running it, cut off), the app waits until that backupd
has been silent for `SILENT_S`: then it is gone (a restarted backupd lists
nothing it ran before), and a backupd that only lost its network finds, at
worst, the app serving during its swap, as it would under an old release;
waiting for ever would keep the app down for a backupd that never comes
back. A new lease holder counts silence from its own first survey.

The records are read before backupd is asked: backupd lists a restore from
before it asks for the suspension until it is over, so a record read
before the answer is never taken for over while its restore runs. The
resume itself deletes the record and clears the flag in one transaction,
and only while that record is there: the asking controller resuming at the
same time, or a user who suspended or resumed the app meanwhile (which
marks the record), leaves nothing for it to undo.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from roost.controller.core import Controller
from roost.controller.store_holds import HoldRow

log = logging.getLogger("roost.controller")

# How often the lease holder looks, while a restore's suspension is recorded.
EVERY_S = 2.0
# A backupd silent this long runs no restore any more (see the module doc).
SILENT_S = 120.0


@dataclass(frozen=True)
class Release:
    hold: HoldRow
    why: str  # for the app's event


class HoldWatch:
    """Backupds' silences, and which restores' suspensions to end (module doc)."""

    def __init__(self, silent_s: float = SILENT_S) -> None:
        self.silent_s = silent_s
        self._heard: dict[str, float] = {}  # backupd -> when it last answered

    def look(
        self,
        now: float,
        holds: Sequence[HoldRow],
        answers: Mapping[str, frozenset[str] | None],
    ) -> list[Release]:
        """`holds` (read first), then each backupd's restores under way
        (`answers`: None for one that did not answer) at `now`: the
        suspensions to end, with why."""
        self._heard = {n: t for n, t in self._heard.items() if n in answers}
        for name, running in answers.items():
            if running is not None or name not in self._heard:
                self._heard[name] = now  # a new silence counts from this survey
        running = frozenset().union(*(r for r in answers.values() if r is not None))
        silent = {n: now - self._heard[n] for n, r in answers.items() if r is None}
        waiting = any(s < self.silent_s for s in silent.values())
        out = []
        for h in holds:
            if h.restore_id in running:
                continue
            if not answers:
                why = "no backupd runs it (none is configured)"
            elif waiting:
                continue  # a silent backupd may be the one running it
            elif silent:
                gone = ", ".join(f"{n} silent for {s:.0f} s" for n, s in sorted(silent.items()))
                why = f"no backupd runs it ({gone})"
            else:
                why = "it is over"
            out.append(Release(h, why))
        return out


async def hold_loop(
    c: Controller,
    leader: Callable[[], bool],
    clock: Callable[[], float] = time.monotonic,
    every_s: float = EVERY_S,
) -> None:
    """On the lease holder: end the suspensions of restores that are over
    (module doc). Asks backupd nothing while no suspension is recorded."""
    watch: HoldWatch | None = None
    while True:
        try:
            holds = await c.store.restore_holds() if leader() else []
            if not holds:
                watch = None  # silences count anew from the next record's first survey
            else:
                watch = watch or HoldWatch()
                answers = await c.backups.restores_running() if c.backups.configured else {}
                if leader():
                    for r in watch.look(clock(), holds, answers):
                        await release(c, r)
        except Exception:  # a database blip must not end the watch
            log.exception("looking for restores' suspensions to end failed")
        await asyncio.sleep(every_s)


async def release(c: Controller, r: Release) -> None:
    h = r.hold
    done = await c.store.release_hold(h.app_id, h.app, h.restore_id)
    if done == "resumed":
        why = f"after its restore {h.restore_id}: {r.why}"
        log.info("%s resumed %s", h.app, why)
        await c.store.add_event("resume", f"{h.app} resumed {why}", h.app_id)
        await c.platform_log(h.app, f"app resumed {why}")
        c.wake.set()
    elif done == "user":
        log.info("%s: its restore %s is over; left as its user set it", h.app, h.restore_id)
