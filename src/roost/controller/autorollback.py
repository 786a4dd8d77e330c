"""The automatic rollback's adapter: reads the app's releases when its serving
release's instances look crash-looping (the pure `aftercare.trouble`),
asks `aftercare.decide`, and rolls back through the store (`roll_back`: the
bad release marked, the copy of the one before made, in one transaction),
then says so in the app's log, on the deploy log of the bad release's
build and as a `deploy-rolled-back` event (the dashboard shows events and
each release's status). Run by the scheduler lease holder in each pass
over the apps whose instances moved (`reconcilestep.step`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from roost.controller import aftercare, deployflow
from roost.controller.astore import AsyncStore
from roost.controller.scheduler import Placement
from roost.controller.store import NotFound, ReleaseRow
from roost.wire.messages import InstanceStatus, LogLine

log = logging.getLogger("roost.controller")


class AutoRollback:
    def __init__(self, store: AsyncStore, window_s: float) -> None:
        self.store = store
        self.window_s = window_s
        # Releases found past their window or otherwise never to roll back
        # (`Decision("done")`): not read again. Small: one key per release.
        self._done: set[tuple[int, int]] = set()

    async def look(
        self,
        app_name: str,
        serving: ReleaseRow | None,
        placed: Sequence[Placement],
        statuses: Mapping[str, InstanceStatus],
    ) -> bool:
        """Roll the app back when its serving release crash-loops in its
        window; whether it did (the caller wakes its loop)."""
        if serving is None or self.window_s <= 0:
            return False
        key = (serving.app_id, serving.version)
        if key in self._done:
            return False
        mine = [(p.instance_id, p.process_type, p.idx) for p in placed if p.release == key[1]]
        why = aftercare.trouble(mine, statuses)
        if not why:
            return False  # the usual case: no database read
        rels = await self.store.releases(serving.app_id)  # fresh: status, promoted_at
        fresh = next((r for r in rels if r.version == serving.version), None)
        if fresh is None:
            return False
        d = aftercare.decide(fresh, rels, why, time.time(), self.window_s)
        if d.verdict == "done":
            self._done.add(key)
        if d.verdict != "rollback":
            return False
        self._done.add(key)
        return await self._roll_back(app_name, fresh, d.target, d.reason)

    async def _roll_back(self, app_name: str, bad: ReleaseRow, target: int, why: str) -> bool:
        said = aftercare.message(bad.version, target, why)
        now = time.time()
        lines = [LogLine(app=app_name, ts=now, source="platform", process="", line=said)]
        if bad.build_id:  # the deploy that made it reads it in its own log too
            lines.append(
                LogLine(app=app_name, ts=now, source="build", process=bad.build_id,
                        line=f"-----> {said}")
            )  # fmt: skip
        move = deployflow.release_move(bad.status, deployflow.Event.CRASH_LOOPED)
        try:
            version = await self.store.roll_back(
                bad.app_id, bad.version, move, target, said,
                f"automatic rollback to v{target}: v{bad.version} crash-looped after promotion",
                lines,
            )  # fmt: skip
        except NotFound:
            return False  # the app or the target was deleted meanwhile
        if version is None:
            return False  # another controller did, or a release replaced it meanwhile
        log.warning("%s: %s (v%d)", app_name, said, version)
        await self.store.add_event("deploy-rolled-back", f"{app_name}: {said}", bad.app_id)
        await self.store.notify_event(
            "deploy-rolled-back", app_name, said, version=bad.version, to=target
        )
        return True
