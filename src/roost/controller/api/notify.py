"""Alert targets (`roost notify`, controller/notify.py) and their deliveries.

An app's targets are its members' business (they read its events already);
platform-wide targets (no app: every alert, host and backup ones included)
are the operators'. A malformed URL is a 422 saying why; one nobody answers
at is accepted and its deliveries show failing. A member's target may not
point at a private address (the controller sits inside the platform's
network); an operator's may.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from roost.controller.api.deps import (
    Account,
    ApiError,
    CurrentAccount,
    CurrentController,
    RowId,
    RowIdQuery,
    app_for_member,
    require_admin,
)
from roost.controller.core import Controller
from roost.controller.notifier import refusal
from roost.controller.notify import BadTarget, parse_target
from roost.controller.store_notify import TargetRow

router = APIRouter(prefix="/api")
MAX_URL = 2000


class TargetIn(BaseModel):
    url: str = Field(max_length=MAX_URL)
    app: str | None = Field(default=None, max_length=64)  # None: platform-wide
    secret: str = Field(default="", max_length=256)  # HMAC key of a webhook's signature


def _shown(r: TargetRow) -> dict[str, Any]:
    state = "failing" if r.last_error else "delivering" if r.delivered else "waiting"
    return {
        "id": r.id,
        "app": r.app or None,
        "url": r.url,
        "created_at": r.created_at,
        "state": state,
        "pending": r.pending,
        "delivered": r.delivered,
        "failed": r.failed,
        "last_error": r.last_error,
        "last_at": r.last_at,
    }


async def _visible(c: Controller, who: Account, app: str | None) -> list[TargetRow]:
    """The targets `who` may see: one app's, or every one they may."""
    if app is not None:
        return await c.store.notify_targets({(await app_for_member(c, who, app)).id})
    if who.is_admin:
        return await c.store.notify_targets()
    return await c.store.notify_targets(await c.store.apps_visible_to(who.id))


async def _target_for(c: Controller, who: Account, target_id: int) -> TargetRow:
    """The target, if `who` may change it; else 404 (or 403 for a platform one)."""
    row = await c.store.notify_target(target_id)
    if row is None:
        raise ApiError(404, f"no notification target {target_id}")
    if row.app_id is None:
        require_admin(who, "platform-wide notification targets")
        return row
    if not who.is_admin and row.id not in {r.id for r in await _visible(c, who, None)}:
        raise ApiError(404, f"no notification target {target_id}")
    return row


@router.get("/notify")
async def list_targets(
    who: CurrentAccount, c: CurrentController, app: str | None = None
) -> list[dict[str, Any]]:
    return [_shown(r) for r in await _visible(c, who, app)]


@router.post("/notify", status_code=201)
async def add_target(body: TargetIn, who: CurrentAccount, c: CurrentController) -> dict[str, Any]:
    if body.app is None:
        require_admin(who, "platform-wide notification targets")
        app_id = None
    else:
        app_id = (await app_for_member(c, who, body.app)).id
    try:
        # An operator's target may reach inside the platform; a member's not.
        why = "" if who.is_admin else await refusal(parse_target(body.url))
        if why:
            raise ApiError(422, why)
        target_id = await c.store.add_notify_target(app_id, body.url, body.secret, who.is_admin)
    except BadTarget as exc:
        raise ApiError(422, str(exc)) from None
    row = await c.store.notify_target(target_id)
    assert row is not None
    return _shown(row)


@router.delete("/notify/{target_id}")
async def remove_target(
    target_id: RowId, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    await _target_for(c, who, target_id)
    await c.store.remove_notify_target(target_id)
    return {"id": target_id, "removed": True}


@router.get("/notify/log")
async def delivery_log(
    who: CurrentAccount,
    c: CurrentController,
    app: str | None = None,
    target: RowIdQuery = None,
    limit: int = Query(default=50, ge=1, le=1000),
) -> list[dict[str, Any]]:
    """The newest deliveries of the targets `who` may see: each one's alert,
    state, tries and last error."""
    if target is not None:
        ids = {(await _target_for(c, who, target)).id}
    else:
        ids = {r.id for r in await _visible(c, who, app)}
    rows = await c.store.notify_log(ids, limit)
    return [
        {
            "id": r.id, "target": r.target_id, "event": r.kind, "app": r.app or None,
            "message": r.message, "ts": r.ts, "state": r.state, "attempts": r.attempts,
            "next_at": r.next_at if r.state == "pending" else None,
            "last_at": r.last_at, "last_error": r.last_error,
        }
        for r in rows
    ]  # fmt: skip
