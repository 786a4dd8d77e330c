"""Backups: list, capture, restore, retention policy; the platform-wide status;
a servicehost's apps restored onto it after it lost its data.

Every call goes to the backupds (roost.controller.backups: each entry
names the backupd holding it, and "backupds" says which answered, an
unreachable one shown so, never left out). A capture or restore
is one long request (minutes), answered when it is done. A restore in place
shows the app's maintenance page only while its data is replaced: backupd
asks a controller to suspend it once the restored copy is sound, right
before the swap (HostRestoreApp, roost.backups.restore), so a restore that
fails before (a dump that does not load, a server that cannot be reached)
leaves it serving, its instances never stopped; an app the restore
suspended is resumed here after it, whatever the outcome (unless a user
suspended or resumed it meanwhile), and the answer waits (a minute at most)
for its instances to run again; should this controller die first, the
lease holder resumes it once the restore is over (roost.controller.
restorehold). What cannot be
done as asked (an unknown id, a time outside the point-in-time window) is
refused before anything changes.

A platform may run without a backupd: the listings then answer 200 with
"configured": false, no entries and a message saying nothing is backed up
(the dashboard and `roost backups list` show it), and what needs backupd
(capture, restore, policy) is refused with 409, never a 5xx.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
from fastapi import APIRouter
from pydantic import BaseModel, Field

from roost.controller import lifecycle
from roost.controller.api.deps import (
    ApiError,
    CurrentAccount,
    CurrentController,
    app_for_member,
    app_for_owner,
    require_admin,
)
from roost.controller.backups import (
    NOT_CONFIGURED,
    BackupError,
    Backups,
    check_restore,
    described,
    health,
    serving_again,
)
from roost.controller.core import Controller
from roost.controller.store import NotFound
from roost.wire.messages import BackupEntry, BackupKind, BackupPolicySet

router = APIRouter(prefix="/api")
log = logging.getLogger("roost.controller")

# An app a restore suspended is resumed, and its answer waits this long at
# most for its instances to run again.
RESUME_WAIT_S = 60


def _backups(c: Controller) -> Backups:
    """backupd's client; 409 without one (a configuration: retrying cannot help)."""
    b = c.backups
    if not b.configured:
        raise ApiError(409, NOT_CONFIGURED)
    return b


def _entry(e: BackupEntry) -> dict[str, Any]:
    return msgspec.to_builtins(e)


def _health(entries: list[BackupEntry]) -> list[dict[str, Any]]:
    return [
        {
            "app": h.app,
            "state": h.state,
            "red": h.red,
            "verified_at": h.verified_at,
            "message": h.message,
        }
        for h in health(entries, time.time())
    ]


@router.get("/apps/{name}/backups")
async def list_backups(name: str, who: CurrentAccount, c: CurrentController) -> dict[str, Any]:
    app = await app_for_member(c, who, name)
    if not c.backups.configured:
        # Nothing is backed up, said plainly ("configured": false): a listing
        # of a legitimate configuration, not an error.
        empty = {"from": 0.0, "to": 0.0}
        return {"app": app.name, "configured": False, "message": NOT_CONFIGURED,
                "entries": [], "pitr": empty, "health": None}  # fmt: skip
    try:
        listing = await _backups(c).entries(app.name)
    except BackupError as exc:
        raise ApiError(exc.status, str(exc)) from None
    entries = listing.entries
    status = _health(entries)
    return {
        "app": app.name,
        "configured": True,
        "entries": [_entry(e) for e in entries],
        "pitr": {"from": listing.pitr_from, "to": listing.pitr_to},
        "windows": {n: {"from": f, "to": t} for n, (f, t) in listing.windows.items()},
        "backupds": listing.status(),
        "health": status[0] if status else None,
    }


class CaptureBody(BaseModel):
    kinds: list[BackupKind] = Field(default_factory=list, max_length=6)


@router.post("/apps/{name}/backups", status_code=201)
async def capture(
    name: str, who: CurrentAccount, c: CurrentController, body: CaptureBody | None = None
) -> dict[str, Any]:
    app = await app_for_member(c, who, name)
    kinds = body.kinds if body is not None else []
    try:
        entries = await _backups(c).capture(app.name, "capture", kinds)
    except BackupError as exc:
        raise ApiError(exc.status, str(exc)) from None
    await c.store.add_event("backup-captured", f"{app.name}: {described(entries)}", app.id)
    return {"app": app.name, "entries": [_entry(e) for e in entries]}


class RestoreBody(BaseModel):
    id: str = Field(default="", max_length=64)
    at: str = Field(default="", max_length=40)
    # A new database to restore into, leaving the app's own alone.
    to: str = Field(default="", max_length=40, pattern=r"^([a-z][a-z0-9_]{0,39})?$")


@router.post("/apps/{name}/backups/restore")
async def restore(
    name: str, body: RestoreBody, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    app = await app_for_owner(c, who, name)
    b = _backups(c)
    try:
        listing = await b.entries(app.name)
        problem = check_restore(listing, app.name, body.id, body.at)
    except BackupError as exc:
        raise ApiError(exc.status, str(exc)) from None
    if problem:
        raise ApiError(422, problem)
    what = body.id or f"the time {body.at}"
    # Suspended by backupd's request right before the swap, not here (module doc).
    resume = not body.to and not app.suspended
    try:
        done = await b.restore(app.name, body.id, body.at, body.to, listing)
    except BackupError as exc:
        await c.store.add_event("backup-restore-failed", f"{app.name}: {what}: {exc}", app.id)
        raise ApiError(exc.status, str(exc)) from None
    finally:
        if resume:
            # Shielded: a request cut short (its client gone) still resumes it.
            await asyncio.shield(_resume_after_restore(c, app.name))
    await c.store.add_event("backup-restored", f"{app.name}: {what}: {done.message}", app.id)
    return {
        "app": app.name,
        "message": done.message,
        "database": done.database,
        "kept": done.kept,
        "safety_backup": done.safety_backup,
    }


async def _resume_after_restore(c: Controller, name: str) -> None:
    """The app out of maintenance, if the restore put it there, and running
    again (its instances up, RESUME_WAIT_S at most) before the answer: a
    restore's answer means the app serves."""
    try:
        app = await c.store.app(name)
    except NotFound:
        return  # deleted meanwhile
    # Only while the restore's record of its suspension is there and no user
    # touched it since (roost.controller.restorehold ends it should this
    # controller die first).
    done = await c.store.release_hold(app.id, app.name)
    if done == "resumed":
        await lifecycle.suspended_now(c, app, "after its restore", suspended=False)
    elif done == "user" or not app.suspended:
        return
    else:
        # Suspended with no record: by a controller of the previous release
        # (it records none), during a rolling upgrade; resumed as it did.
        await lifecycle.set_suspended(c, app, False)
    if app.current_release is None:
        return
    wanted = sum((await c.store.formation(app.id)).values())
    deadline = time.monotonic() + RESUME_WAIT_S
    while time.monotonic() < deadline:
        placed = [p.instance_id for p in await c.store.placements(name)]
        statuses = c.soft.statuses()
        states = {i: s.state for i in placed if (s := statuses.get(i)) is not None}
        if serving_again(placed, states, wanted):
            return
        await asyncio.sleep(0.5)
    log.warning("%s: resumed after its restore, not running again after %ds", name, RESUME_WAIT_S)


class PolicyBody(BaseModel):
    pitr_days: int = Field(default=7, ge=1, le=3650)
    daily: int = Field(default=30, ge=1, le=3650)
    weekly: int = Field(default=12, ge=0, le=520)
    monthly: int = Field(default=12, ge=0, le=1200)


@router.put("/apps/{name}/backups/policy")
async def set_policy(
    name: str, body: PolicyBody, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    app = await app_for_owner(c, who, name)
    policy = BackupPolicySet(app=app.name, **body.model_dump())
    try:
        await _backups(c).set_policy(policy)
    except BackupError as exc:
        raise ApiError(exc.status, str(exc)) from None
    await c.store.add_event(
        "backup-policy",
        f"{app.name}: point in time {body.pitr_days} days, daily {body.daily}, "
        f"weekly {body.weekly}, monthly {body.monthly}",
        app.id,
    )
    return {"app": app.name, **body.model_dump()}


@router.post("/backups", status_code=201)
async def capture_platform(who: CurrentAccount, c: CurrentController) -> dict[str, Any]:
    """The platform's own state and every PostgreSQL cluster's base backup, now
    (before an upgrade, say): the operators'."""
    require_admin(who, "backing up the platform")
    try:
        entries = await _backups(c).capture("", "capture")
    except BackupError as exc:
        raise ApiError(exc.status, str(exc)) from None
    await c.store.add_event("backup-captured", f"platform: {described(entries)}")
    return {"entries": [_entry(e) for e in entries]}


@router.post("/servicehosts/{host}/restore")
async def restore_servicehost(
    host: str, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    """Every app of a servicehost that lost its data (and came back empty),
    back onto it with the credentials the apps hold: the operators'. A
    platform event says what came back, and names what did not. Each app
    is in maintenance for its own part meanwhile: backupd tells this
    controller when it starts and ends (roost.controller.hostsuspend)."""
    require_admin(who, "restoring a servicehost")
    b = _backups(c)
    try:
        done = await b.restore_host(host)
    except BackupError as exc:
        await c.store.add_event("servicehost-restore-failed", f"{host}: {exc}")
        raise ApiError(exc.status, str(exc)) from None
    failed = [r for r in done.reports if not r.ok]
    summary = f"{host} from {done.platform_backup}: {len(done.reports) - len(failed)} restored"
    if failed:
        summary += "; not restored: " + "; ".join(f"{r.app} {r.kind}: {r.message}" for r in failed)
    await c.store.add_event(
        "servicehost-restore-failed" if failed else "servicehost-restored", summary
    )
    return {
        "host": done.host,
        "platform_backup": done.platform_backup,
        "ok": not failed,
        "reports": [msgspec.to_builtins(r) for r in done.reports],
    }


@router.get("/backups")
async def platform_status(who: CurrentAccount, c: CurrentController) -> dict[str, Any]:
    """Every app's backups (the newest, and the newest verified, of each
    kind) and whether each is fine: the operators' view."""
    require_admin(who, "the platform's backups")
    if not c.backups.configured:
        return {"configured": False, "message": NOT_CONFIGURED, "entries": [], "health": []}
    try:
        listing = await _backups(c).entries("")
    except BackupError as exc:
        raise ApiError(exc.status, str(exc)) from None
    entries = listing.entries
    return {
        "configured": True,
        "entries": [_entry(e) for e in entries],
        "backupds": listing.status(),
        "health": _health(entries),
    }
