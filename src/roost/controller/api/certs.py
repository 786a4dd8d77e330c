"""Certificates of custom domains, with their ACME state (`roost certs`, the dashboard).

Uploading a certificate by hand is `POST /api/apps/{name}/certs` (manage.py);
here is what users look at: every custom domain they can see, who provides
its certificate (acme, uploaded, or nobody yet), its expiry, and for ACME
the state, the reason of the last failure and when it is tried next.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import APIRouter

from roost.controller.acme_plan import Order, managed
from roost.controller.api.deps import ApiError, CurrentAccount, CurrentController, app_for_owner
from roost.controller.core import Controller
from roost.controller.domains import DomainRefused, normalize
from roost.controller.store import NotFound

router = APIRouter(prefix="/api", tags=["certificates"])


def cert_rows(
    domains: Iterable[tuple[str, str]],
    not_after: Mapping[str, float],
    orders: Mapping[str, Order],
    acme_on: bool,
) -> list[dict[str, Any]]:
    """One row per (app, hostname): pure, over what the store holds."""
    rows = []
    for app, host in sorted(domains):
        o = orders.get(host)
        has_cert = host in not_after
        if o is not None:
            source = "acme"
        elif has_cert:
            source = "uploaded"
        elif acme_on and managed(host, False, False):
            source = "acme"  # its order row is written at the lease holder's next tick
        else:
            source = "none"
        rows.append(
            {
                "app": app,
                "hostname": host,
                "source": source,
                "not_after": not_after.get(host),
                "state": o.state if o is not None else ("pending" if source == "acme" else ""),
                "reason": o.reason if o is not None else "",
                "detail": o.detail if o is not None else "",
                "failures": o.failures if o is not None else 0,
                "next_at": o.next_at if o is not None else None,
            }
        )
    return rows


async def cert_view(c: Controller, visible: set[int] | None) -> list[dict[str, Any]]:
    """The rows for the apps in `visible` (None: every app, for admins)."""
    names = {a.id: a.name for a in await c.store.apps() if visible is None or a.id in visible}
    domains = [(names[d.app_id], d.hostname) for d in await c.store.domains() if d.app_id in names]
    not_after = {r.hostname: r.not_after for r in await c.store.certificates() if r.app_id in names}
    orders = {o.hostname: o for o in await c.store.acme_orders() if o.app_id in names}
    return cert_rows(domains, not_after, orders, bool(c.settings.acme_directory))


@router.get("/certs")
async def list_all(who: CurrentAccount, c: CurrentController) -> list[dict[str, Any]]:
    """Every custom domain of the apps you can see, and its certificate's state."""
    visible = None if who.is_admin else await c.store.apps_visible_to(who.id)
    return await cert_view(c, visible)


@router.post("/apps/{name}/certs/{hostname}/renew")
async def renew(
    name: str, hostname: str, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    """Order a new certificate for an ACME-managed domain now (a forced renewal)."""
    app = await app_for_owner(c, who, name)
    if not c.settings.acme_directory:
        raise ApiError(409, "ACME is off on this platform (ROOST_ACME_DIRECTORY is empty)")
    try:
        host = normalize(hostname)
    except DomainRefused as exc:
        raise ApiError(exc.status, str(exc)) from None
    try:
        await c.store.acme_renew_now(app.id, host, time.time())
    except NotFound as exc:
        raise ApiError(404, str(exc)) from None
    return {"hostname": host, "renewing": True}
