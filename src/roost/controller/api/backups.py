"""Backups: list, capture, restore, retention policy; the platform-wide status;
a servicehost's apps restored onto it after it lost its data.

Every call goes to the backupds (roost.controller.backups: each entry
names the backupd holding it, and "backupds" says which answered, an
unreachable one shown so, never left out). A capture or restore
is one long request (minutes), answered when it is done. A restore in place
suspends the app (its maintenance page) for as long as it runs, and resumes
it after, whatever the outcome, unless it was suspended before; what cannot
be done as asked (an unknown id, a time outside the point-in-time window) is
refused before anything changes, the app not even suspended.

A platform may run without a backupd: the listings then answer 200 with
"configured": false, no entries and a message saying nothing is backed up
(the dashboard and `roost backups list` show it), and what needs backupd
(capture, restore, policy) is refused with 409, never a 5xx.
"""

from __future__ import annotations

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
)
from roost.controller.core import Controller
from roost.wire.messages import BackupEntry, BackupKind, BackupPolicySet

router = APIRouter(prefix="/api")


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
    in_place = not body.to
    # The maintenance page while the data is swapped under the app.
    suspend = in_place and not app.suspended
    if suspend:
        await lifecycle.set_suspended(c, app, True)
    try:
        done = await b.restore(app.name, body.id, body.at, body.to, listing)
    except BackupError as exc:
        await c.store.add_event("backup-restore-failed", f"{app.name}: {what}: {exc}", app.id)
        raise ApiError(exc.status, str(exc)) from None
    finally:
        if suspend:
            await lifecycle.set_suspended(c, app, False)
    await c.store.add_event("backup-restored", f"{app.name}: {what}: {done.message}", app.id)
    return {
        "app": app.name,
        "message": done.message,
        "database": done.database,
        "kept": done.kept,
        "safety_backup": done.safety_backup,
    }


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
