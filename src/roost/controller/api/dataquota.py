"""Each app's own data quota (issue 17): `roost data quota APP [SIZE]`.

The size is stored with the app (apps.data_quota_mb, migration 0023) and
carried to its runners in the assignments of instances started since
(InstanceAssignment.data_quota_mb: a change rolls a fresh copy of the
serving release, whose instances grow the tree's image, or remount its
collection, with the new size) and to the servicehost with each data session
(AppGrant, DataStart). A size below what the app stores, as the servicehost
last reported it, is refused here; the hosts refuse it too (quota.plan).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from roost.controller.api.deps import (
    Account,
    ApiError,
    CurrentAccount,
    CurrentController,
    app_for_member,
    app_for_owner,
)
from roost.controller.api.services import data_info
from roost.controller.core import Controller
from roost.controller.store import AppRow
from roost.datadir import quotasize

router = APIRouter(prefix="/api")


class QuotaBody(BaseModel):
    # "2G", "512M", or a whole number of MiB.
    size: str | int


def _used(c: Controller, app: AppRow) -> int:
    if c.services is None:
        return 0  # no servicehost: nothing stored anywhere to measure
    return int(data_info(c.services.status.values(), app.name)["used_bytes"])


def shown(c: Controller, app: AppRow) -> dict[str, Any]:
    default = c.settings.data_quota_mb
    return {
        "app": app.name,
        "quota_mb": app.data_quota_mb or None,
        "default_mb": default,
        "effective_mb": quotasize.effective(app.data_quota_mb, default),
        "used_bytes": _used(c, app),
    }


@router.get("/apps/{name}/data/quota")
async def get_quota(name: str, who: CurrentAccount, c: CurrentController) -> dict[str, Any]:
    return shown(c, await app_for_member(c, who, name))


async def _set(c: Controller, who: Account, app: AppRow, own_mb: int) -> dict[str, Any]:
    default = c.settings.data_quota_mb
    old = quotasize.effective(app.data_quota_mb, default)
    new = quotasize.effective(own_mb, default)
    if quotasize.raises(old, new) and not who.is_admin:
        raise ApiError(
            403,
            f"more room for {app.name}'s data ({_says(old)} to {_says(new)}): "
            "operators (admin accounts) only",
        )
    if new:
        why = quotasize.refusal(new, _used(c, app))
        if why is not None:
            raise ApiError(409, f"{app.name}: {why}")
    release = None
    if own_mb != app.data_quota_mb:
        await c.store.set_data_quota(app.id, own_mb or None)
        await c.store.add_event("data-quota", f"{app.name}: data quota {_says(new)}", app.id)
        if app.current_release is not None:
            # Running instances keep the size they started with (their
            # assignments are reused: assign.py does not compare it); a fresh
            # copy of the serving release rolls new ones in with the new
            # size, without downtime, as a config change does.
            release = await c.store.copy_release(
                app.id, app.current_release, f"data quota {_says(new)}"
            )
        c.wake.set()
    return {**shown(c, await c.store.app(app.name)), "release": release}


def _says(mb: int) -> str:
    return quotasize.human(mb * quotasize.MB) if mb else "none"


@router.put("/apps/{name}/data/quota")
async def set_quota(
    name: str, body: QuotaBody, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    """Give the app a data quota of its own (its instances restart onto it)."""
    app = await app_for_owner(c, who, name)
    try:
        mb = quotasize.parse_mb(body.size)
    except quotasize.BadSize as exc:
        raise ApiError(422, str(exc)) from None
    return await _set(c, who, app, mb)


@router.delete("/apps/{name}/data/quota")
async def reset_quota(name: str, who: CurrentAccount, c: CurrentController) -> dict[str, Any]:
    """The platform's quota again (ROOST_DATA_QUOTA_MB)."""
    return await _set(c, who, await app_for_owner(c, who, name), 0)
