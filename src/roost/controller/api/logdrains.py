"""Log drains (`roost drains`) and an app's log retention (`roost log-retention`).

Members of an app manage both: they read its logs already. A malformed
drain URL is a 422 saying why; one nobody answers at is accepted and its
status says it is failing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from roost.controller import logretention
from roost.controller.api.deps import (
    ApiError,
    CurrentAccount,
    CurrentController,
    RowId,
    app_for_member,
)
from roost.controller.logdrain_url import MAX_URL, BadDrainUrl, parse_drain_url, target_refusal
from roost.controller.store_access import Conflict

router = APIRouter(prefix="/api")


class DrainIn(BaseModel):
    url: str = Field(max_length=MAX_URL)


class RetentionIn(BaseModel):
    # None: the platform's default (lines) or no age limit (days).
    lines: int | None = None
    days: float | None = None


@router.get("/apps/{name}/drains")
async def list_drains(name: str, who: CurrentAccount, c: CurrentController) -> list[dict[str, Any]]:
    app = await app_for_member(c, who, name)
    rows = await c.store.log_drains(app.id)
    status = await c.store.drain_status([r.id for r in rows])
    out = []
    for r in rows:
        s = status[r.id]
        out.append(
            {
                "id": r.id,
                "url": r.url,
                "token": r.token,
                "created_at": r.created_at,
                "state": "failing" if s.failing else "delivering" if s.delivered else "waiting",
                "delivered": s.delivered,
                "dropped": s.dropped,
                "last_error": s.last_error,
                "last_error_at": s.last_error_at,
                "last_ok_at": s.last_ok_at,
            }
        )
    return out


@router.post("/apps/{name}/drains", status_code=201)
async def add_drain(
    name: str, body: DrainIn, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    app = await app_for_member(c, who, name)
    try:
        target = parse_drain_url(body.url)
    except BadDrainUrl as exc:
        raise ApiError(422, str(exc)) from None
    refusal = None if c.settings.log_drain_private == "on" else target_refusal(target)
    if refusal is not None:
        raise ApiError(422, refusal)
    try:
        row = await c.store.add_log_drain(app.id, body.url)
    except Conflict as exc:
        raise ApiError(409, str(exc)) from None
    c.logdrains.refresh_soon()
    return {"id": row.id, "url": row.url, "token": row.token, "kind": target.kind}


@router.delete("/apps/{name}/drains/{drain_id}")
async def remove_drain(
    name: str, drain_id: RowId, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    app = await app_for_member(c, who, name)
    if not await c.store.remove_log_drain(app.id, drain_id):
        raise ApiError(404, f"{name} has no drain {drain_id}")
    c.logdrains.refresh_soon()
    return {"id": drain_id, "removed": True}


@router.get("/apps/{name}/log-retention")
async def get_retention(name: str, who: CurrentAccount, c: CurrentController) -> dict[str, Any]:
    app = await app_for_member(c, who, name)
    own = (await c.store.log_retention()).get(app.id)
    return _retention(own, c.settings.log_lines_kept)


@router.put("/apps/{name}/log-retention")
async def set_retention(
    name: str, body: RetentionIn, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    app = await app_for_member(c, who, name)
    try:
        logretention.check(body.lines, body.days)
    except logretention.BadRetention as exc:
        raise ApiError(422, str(exc)) from None
    await c.store.set_log_retention(app.id, body.lines, body.days)
    return _retention(logretention.Retention(body.lines, body.days), c.settings.log_lines_kept)


def _retention(own: logretention.Retention | None, default_lines: int) -> dict[str, Any]:
    lines = own.lines if own is not None else None
    return {
        "lines": lines if lines is not None else default_lines,
        "lines_default": lines is None,
        "days": own.days if own is not None else None,
    }
