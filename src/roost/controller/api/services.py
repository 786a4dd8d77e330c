"""Databases as services: list, add, remove (after a final backup), credentials."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from roost.controller import lifecycle, redispair, replace, replaceflow
from roost.controller.api.deps import (
    ApiError,
    CurrentAccount,
    CurrentController,
    app_for_member,
    app_for_owner,
    require_admin,
)
from roost.controller.core import Controller
from roost.controller.services import ServiceBroker, ServiceError
from roost.controller.store import AppRow
from roost.wire.messages import KeptCopy, ServerStatus, ServiceHostStatus

router = APIRouter(prefix="/api")


def broker(c: Controller) -> ServiceBroker:
    if c.services is None:
        raise ApiError(503, "services are not configured on this controller")
    return c.services


_roll = replaceflow.roll  # instances pick up changed credentials through a fresh release


@router.get("/apps/{name}/services")
async def list_services(
    name: str, who: CurrentAccount, c: CurrentController
) -> list[dict[str, Any]]:
    app = await app_for_member(c, who, name)
    await broker(c).reread(app.id)
    holders = await broker(c).holders(app.id)
    return [
        {
            "kind": cr.kind,
            "host": cr.host,
            "port": cr.port,
            "database": cr.database,
            **_holder(holders.get(cr.kind, "")),
        }
        for cr in await broker(c).credentials(app.id)
    ]


async def _holder_of(b: ServiceBroker, app: AppRow, kind: str) -> str:
    """Its holder, found now if not recorded yet ("" when that fails: the
    connection details are still worth showing)."""
    try:
        return await b.holder(app, kind)
    except ServiceError:
        return ""


def _holder(host: str) -> dict[str, str]:
    """The servicehost holding the data ("" while not recorded) and its
    standby (none yet: the pairs are to come)."""
    return {"holder": host, "standby": ""}


class ServiceBody(BaseModel):
    kind: str = Field(min_length=1, max_length=32)
    memory_mb: int = Field(default=0, ge=0, le=65536)


@router.post("/apps/{name}/services", status_code=201)
async def add_service(
    name: str, body: ServiceBody, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    app = await app_for_owner(c, who, name)
    b = broker(c)
    await b.reread(app.id)
    if body.kind in await b.kinds(app.id):
        raise ApiError(409, f"{name} already has {body.kind}")
    try:
        creds = await b.add(app, body.kind, body.memory_mb)
    except ServiceError as exc:
        raise ApiError(exc.status, str(exc)) from None
    await c.store.add_event("service-added", f"{name}: {body.kind}", app.id)
    return {
        "kind": creds.kind,
        "host": creds.host,
        "port": creds.port,
        "release": await _roll(c, app, f"add {body.kind}"),
    }


@router.delete("/apps/{name}/services/{kind}")
async def remove_service(
    name: str, kind: str, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    app = await app_for_owner(c, who, name)
    await broker(c).reread(app.id)
    try:
        if kind in await broker(c).kinds(app.id):
            await lifecycle.backup_before(c, app, f"services remove {kind}")
        backup = await broker(c).remove(app, kind)
    except ServiceError as exc:
        raise ApiError(exc.status, str(exc)) from None
    await c.store.add_event("service-removed", f"{name}: {kind} (final backup {backup})", app.id)
    return {"kind": kind, "backup": backup, "release": await _roll(c, app, f"remove {kind}")}


@router.get("/apps/{name}/services/{kind}")
async def service_info(
    name: str, kind: str, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    """Connection details including the password (for `roost psql` / `roost redis-cli`).

    Members may read them: a collaborator can `run` a shell in the app and
    read DATABASE_URL from its environment anyway.
    """
    app = await app_for_member(c, who, name)
    b = broker(c)
    await b.reread(app.id)
    if kind == "data":
        info = data_info(b.status.values(), app.name)
        # Not mounted on the servicehost (no session there since it
        # started, or a cluster's servicehost): the size the app is given.
        own = app.data_quota_mb or c.settings.data_quota_mb
        return {**info, "quota_bytes": own << 20} if own and not info["quota_bytes"] else info
    for cr in await b.credentials(app.id):
        if cr.kind == kind:
            info = {f: getattr(cr, f) for f in cr.__struct_fields__ if f != "copy"}
            holder = _holder(await _holder_of(b, app, kind))
            shown = {**info, **limits(await b.report(app, kind))}
            if kind == "postgres":  # its pair: primary, standby, lag (Patroni's /cluster)
                shown |= await b.pg_replication(app)
            if kind == "redis":  # its pair: master, replica, lag (controller/redispair.py)
                shown |= redispair.replication(b.status.values(), app.name, time.time())
            return {**shown, **holder, "kept": kept_of(b.status.values(), app.name, kind)}
    raise ApiError(404, f"{name} has no {kind} service")


def data_info(reports: Iterable[ServiceHostStatus], app: str) -> dict[str, Any]:
    """The app's data directory: its quota and use, as a servicehost reports
    them (roost.datadir.quota); no quota, no limit to show."""
    for st in reports:
        for d in st.data:
            if d.app == app:
                return {"kind": "data", "quota_bytes": d.quota_bytes, "used_bytes": d.used_bytes}
    return {"kind": "data", "quota_bytes": 0, "used_bytes": 0}


def _kept(k: KeptCopy) -> dict[str, Any]:
    return {"app": k.app, "kind": k.kind, "name": k.name, "kept_at": k.kept_at}


def kept_of(reports: Iterable[ServiceHostStatus], app: str, kind: str) -> list[dict[str, Any]]:
    """What restores replaced of this service, kept until purged (oldest first)."""
    found = [k for st in reports for k in st.kept if k.app == app and k.kind == kind]
    return [_kept(k) for k in sorted(found, key=lambda k: k.kept_at)]


def limits(s: ServerStatus | None) -> dict[str, Any]:
    """The service's limits and use, as the servicehost enforces them (none when unknown)."""
    if s is None:
        return {}
    if s.kind == "postgres":
        return {"connection_limit": s.connection_limit, "connections": s.connections}
    return {
        "memory_limit_bytes": s.memory_limit_bytes,
        "memory_used_bytes": s.memory_used_bytes,
        "eviction_policy": s.eviction_policy,
        # why its snapshots are off ("": they run): the disk has no room for one
        "snapshot_problem": s.snapshot_problem,
    }


class ReplaceBody(BaseModel):
    new: str = Field(min_length=1, max_length=255, description="the servicehost taking OLD's place")


@router.post("/servicehosts/{old}/replace")
async def replace_servicehost(
    old: str, body: ReplaceBody, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    """A servicehost lost for good: NEW takes its place in every pair it was
    in (controller/replace.py). Refused, nothing changed, while OLD answers,
    when NEW is unknown, in a pair or holding services. The apps on those
    pairs get a fresh release: their runners' data proxies learn of NEW."""
    require_admin(who, "replacing a servicehost")
    broker(c)
    try:
        done = await replaceflow.carry_out(c, old, body.new)
    except replace.ReplaceRefused as exc:
        raise ApiError(exc.status, str(exc)) from None
    except RuntimeError as exc:
        raise ApiError(502, f"{exc} (run the command again to finish)") from None
    return dataclasses.asdict(done)


@router.get("/servicehosts")
async def servicehosts(who: CurrentAccount, c: CurrentController) -> list[dict[str, Any]]:
    require_admin(who, "the servicehost list")
    b = broker(c)
    # Those replaced for good are not listed (controller/retired.py).
    await b.retirements.refresh(b.store, b.hosts, b.status)
    out = []
    for host, st in sorted(b.status.items()):
        out.append(
            {
                "host": host,  # its id: the holder named in services info
                "name": st.host or "servicehost",  # its key's name (the same on every host)
                "disk_free_bytes": st.disk_free_bytes,
                "disk_total_bytes": st.disk_total_bytes,
                "servers": [
                    {
                        "app": s.app,
                        "kind": s.kind,
                        "state": s.state,
                        "port": s.port,
                        "disk_bytes": s.disk_bytes,
                        "snapshot_problem": s.snapshot_problem,
                    }
                    for s in st.servers
                ],
                "kept": [_kept(k) for k in st.kept],
            }
        )
    return out
