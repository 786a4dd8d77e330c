"""A host restore's apps, each in maintenance while its own data comes back.

backupd restores a servicehost's apps one after the other (roost.backups.
hostrestore) and tells a controller when each app's part starts and ends
(HostRestoreApp). At the start the controller suspends the app, so the
router shows its maintenance page instead of an app reading a database,
Redis or data directory half put back; at the end it resumes it at once
(the apps still to come are not held back by it).

An app that did not come back whole (a kind failed, or had no verified
backup and came back empty) stays suspended: serving an empty or partial
database would show its users an app that lost their data, and let them
write into it what a later restore would have to reconcile; a Heroku user
expects the maintenance page to stay until an operator acts, and `roost
resume --app APP` (POST /api/apps/APP/resume) ends it. The app's event
log says so (`backup-restore-failed`), as it says a restore that came back
(`backup-restored`). An app suspended before the host restore is left
suspended whatever the outcome: backupd sends back, with the end, the
start's answer that this controller suspended it (`resume`), so any
controller can end what another started.
"""

from __future__ import annotations

import time

from roost.controller import lifecycle
from roost.controller.core import Controller
from roost.controller.store import NotFound
from roost.wire.dispatch import Entry, on
from roost.wire.messages import APP_SUSPENDED, HostRestoreApp, Msg, Ok


def resume_at_end(suspended_by_restore: bool, ok: bool) -> bool:
    """Whether the end resumes the app: only what the restore suspended, and
    only when every kind came back (see the module's doc). Pure."""
    return suspended_by_restore and ok


def end_event(msg: HostRestoreApp, resumed: bool, suspended: bool) -> tuple[str, str]:
    """The app's event (kind, message) for the end of its part. Pure."""
    where = f"{msg.app}: host restore onto {msg.host}: {msg.message}"
    if msg.ok:
        return "backup-restored", where
    if suspended and not resumed:
        where += f"; it stays in maintenance until `roost resume --app {msg.app}`"
    return "backup-restore-failed", where


class HostSuspend:
    def __init__(self, c: Controller) -> None:
        self.c = c

    def entries(self) -> list[Entry]:
        return [on(HostRestoreApp, self.step)]

    async def step(self, msg: HostRestoreApp) -> Msg:
        c = self.c
        try:
            app = await c.store.app(msg.app)
        except NotFound:
            return Ok()  # an app the state does not hold (deleted since): nothing to show
        if msg.starting and msg.restore_id:
            # An app's own restore: recorded as its, so that whichever
            # controller is alive resumes it once the restore is over
            # (roost.controller.restorehold), should the one that asked die.
            if not await c.store.suspend_for_restore(app.id, app.name, msg.restore_id, time.time()):
                return Ok()  # suspended before: the end leaves it so
            await lifecycle.suspended_now(c, app, f"for its restore {msg.restore_id}")
            return Ok(detail=APP_SUSPENDED)
        if msg.starting:
            if app.suspended:
                return Ok()  # suspended before: the end leaves it so
            await lifecycle.set_suspended(c, app, True)
            return Ok(detail=APP_SUSPENDED)
        resumed = resume_at_end(msg.resume, msg.ok) and app.suspended
        if resumed:
            await lifecycle.set_suspended(c, app, False)
        kind, text = end_event(msg, resumed, app.suspended)
        await c.store.add_event(kind, text, app.id)
        return Ok()
