"""App lifecycle actions shared by Roost's API and ep.io's compatible one."""

from __future__ import annotations

from roost.controller import removal
from roost.controller.backups import BackupError, described
from roost.controller.core import Controller
from roost.controller.services import ServiceError
from roost.controller.store import AppRow
from roost.wire.cluster import Endpoint


async def delete_app(c: Controller, app: AppRow) -> dict[str, str]:
    """A backup kept by backupd and final backups of the app's services
    first, then the app itself; its directories on other hosts are archived
    (roost.controller.removal).

    Raises ServiceError (and deletes nothing) when a backup cannot be taken
    or a servicehost cannot archive the app's data directory: no data is
    lost on any failure. Returns service kind -> backup path.
    """
    await backup_before(c, app, "app deletion")
    backups: dict[str, str] = {}
    if c.services is not None:
        await c.services.reread(app.id)  # bound through another controller too
    if c.services is not None and await c.services.kinds(app.id):
        backups = await c.services.remove_all(app)
    data_hosts = c.services.client if c.services is not None else None
    await removal.archive_on_servicehosts(data_hosts, app)
    await c.store.delete_app(app.name)
    await c.store.add_event("app-deleted", f"{app.name} deleted")
    c.wake.set()
    runners = [
        Endpoint(hb.rpc_endpoint, hb.rpc_key)
        for hb in (s.heartbeat for s in c.soft.alive_hosts())
        if hb.rpc_endpoint and hb.rpc_key
    ]
    await removal.after_delete(data_hosts, runners, c.client_for, app)
    return backups


async def backup_before(c: Controller, app: AppRow, reason: str) -> None:
    """backupd captures the app before a change that drops data; ServiceError
    (the change is refused, nothing done) when that fails (controller.backups)."""
    try:
        entries = await c.backups.before_change(app.name, reason)
    except BackupError as exc:
        raise ServiceError(str(exc), exc.status) from None
    if entries:
        taken = described(entries)
        await c.store.add_event("backup-captured", f"{app.name}: before {reason}: {taken}", app.id)


async def set_suspended(c: Controller, app: AppRow, suspended: bool) -> None:
    """By hand (a user, an operator, a host restore): no app restore's end
    undoes it (roost.controller.restorehold)."""
    await c.store.set_suspended(app.id, suspended)
    await suspended_now(c, app, "", suspended)


async def suspended_now(c: Controller, app: AppRow, why: str, suspended: bool = True) -> None:
    """The event, the app's log line and the scheduler's wake-up once the
    app's `suspended` changed (`why`: a reason shown after it, or "")."""
    word = "suspended" if suspended else "resumed"
    text = f"{word} {why}" if why else word
    await c.store.add_event("suspend" if suspended else "resume", f"{app.name} {text}", app.id)
    await c.platform_log(app.name, f"app {text}")
    c.wake.set()
