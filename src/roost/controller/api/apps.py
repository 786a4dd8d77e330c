"""Apps: create, list, inspect, delete; processes."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from roost.controller import lifecycle
from roost.controller.api.deps import (
    ApiError,
    CurrentAccount,
    CurrentController,
    app_for_member,
    app_for_owner,
    app_name_problem,
)
from roost.controller.services import ServiceError
from roost.controller.store import Conflict

router = APIRouter(prefix="/api")


class AppCreate(BaseModel):
    name: str = Field(min_length=1, max_length=30)


class AppOut(BaseModel):
    name: str
    current_release: int | None
    suspended: bool
    created_at: float
    url: str


def _url(c: Any, name: str) -> str:
    port = c.settings.router_port
    suffix = "" if port == 80 else f":{port}"
    return f"http://{name}.{c.settings.default_domain}{suffix}/"


@router.post("/apps", status_code=201, response_model=AppOut)
async def create_app(body: AppCreate, who: CurrentAccount, c: CurrentController) -> AppOut:
    if (problem := app_name_problem(body.name)) is not None:
        raise ApiError(422, problem)
    try:
        app = await c.store.create_app(body.name, who.id)
    except Conflict:
        raise ApiError(409, f"app {body.name} already exists") from None
    await c.store.add_event("app-created", f"{app.name} created", app.id)
    return AppOut(
        name=app.name,
        current_release=None,
        suspended=False,
        created_at=app.created_at,
        url=_url(c, app.name),
    )


@router.get("/apps", response_model=list[AppOut])
async def list_apps(who: CurrentAccount, c: CurrentController) -> list[AppOut]:
    rows = await c.store.apps()
    if not who.is_admin:
        visible = await c.store.apps_visible_to(who.id)
        rows = [a for a in rows if a.id in visible]
    return [
        AppOut(
            name=a.name,
            current_release=a.current_release,
            suspended=a.suspended,
            created_at=a.created_at,
            url=_url(c, a.name),
        )
        for a in rows
    ]


@router.get("/apps/{name}")
async def app_info(name: str, who: CurrentAccount, c: CurrentController) -> dict[str, Any]:
    app = await app_for_member(c, who, name)
    formation = await c.store.formation(app.id)
    statuses = c.soft.statuses()
    placed = await c.store.placements(name)
    up = sum(
        1 for p in placed if (s := statuses.get(p.instance_id)) is not None and s.state == "up"
    )
    return {
        "name": app.name,
        "current_release": app.current_release,
        "suspended": app.suspended,
        "created_at": app.created_at,
        "url": _url(c, app.name),
        "formation": formation,
        "instances": len(placed),
        "instances_up": up,
    }


@router.delete("/apps/{name}")
async def delete_app(name: str, who: CurrentAccount, c: CurrentController) -> dict[str, Any]:
    app = await app_for_owner(c, who, name)
    try:
        backups = await lifecycle.delete_app(c, app)
    except ServiceError as exc:
        raise ApiError(exc.status, f"not deleted: {exc}") from None
    return {"message": f"deleted {name}", "backups": backups}


@router.get("/apps/{name}/ps")
async def processes(name: str, who: CurrentAccount, c: CurrentController) -> list[dict[str, Any]]:
    app = await app_for_member(c, who, name)
    statuses = c.soft.statuses()
    hosts = {h: s.heartbeat.hostname for h, s in c.soft.hosts.items()}
    out: list[dict[str, Any]] = []
    now = time.time()
    sizes = await c.store.formation_sizes(app.id)
    placed = await c.store.placements(app.name)
    drained = {r.host_id for r in await c.store.host_drains()}
    for p in sorted(placed, key=lambda p: (p.process_type, p.release, p.idx)):
        st = statuses.get(p.instance_id)
        out.append(
            {
                "instance_id": p.instance_id,
                "process": f"{p.process_type}.{p.idx}",
                "process_type": p.process_type,
                "release": p.release,
                "host_id": p.host_id,
                "host": hosts.get(p.host_id, p.host_id),
                # Its host is drained: this instance moves elsewhere soon.
                "host_drained": p.host_id in drained,
                "state": st.state if st else "unknown",
                "port": st.port if st else 0,
                "pid": st.pid if st else 0,
                "memory_mb": round(st.memory_mb, 1) if st else 0.0,
                # The instance's memory limit (its cgroup's), from the formation.
                "memory_limit_mb": sizes.get(p.process_type) or c.settings.instance_memory_mb,
                "restarts": st.restarts if st else 0,
                "uptime_s": round(now - st.started_at, 1) if st and st.started_at else 0.0,
                "command": st.command if st else "",
                # Why it last stopped, e.g. "ran out of memory (limit 256 MB)".
                "last_error": st.last_error if st else "",
            }
        )
    return out


@router.get("/apps/{name}/releases")
async def releases(name: str, who: CurrentAccount, c: CurrentController) -> list[dict[str, Any]]:
    app = await app_for_member(c, who, name)
    return [
        {
            "version": r.version,
            "status": r.status,
            "image_digest": r.image_digest,
            "build_id": r.build_id,
            "description": r.description,
            "created_at": r.created_at,
            "lock": r.lock,
        }
        for r in await c.store.releases(app.id)
    ]
