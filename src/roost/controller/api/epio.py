"""ep.io's control API, so the `epio` 0.3.1 client keeps working.

Same paths and shapes as ep.io served them: form-encoded bodies, the token in
`X-Epio-Token`, every response body JSON, 401 `{"message": ...}` without a
valid token. Apps are addressed by numeric id after a name lookup.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Header, Request
from fastapi.responses import JSONResponse

from roost.controller import lifecycle
from roost.controller.api.accounts import add_key, check_password
from roost.controller.api.deps import (
    Account,
    ApiError,
    CurrentController,
    CurrentGuard,
    RowId,
    account,
    app_for_member,
    app_for_owner,
    app_name_problem,
)
from roost.controller.core import Controller
from roost.controller.services import ServiceError
from roost.controller.store import AppRow, Conflict, NotFound

router = APIRouter(include_in_schema=True, tags=["ep.io compatibility"])


async def _who(request: Request, token: str | None) -> Account:
    if not token:
        raise ApiError(401, "authentication required: send X-Epio-Token")
    return await account(request, None, token)


async def _app_name(c: Controller, app_id: int) -> str:
    try:
        return str((await c.store.app_by_id(app_id)).name)
    except NotFound:
        raise ApiError(404, f"no app with id {app_id}") from None


async def _epio_app(
    app_id: RowId,
    request: Request,
    c: CurrentController,
    x_epio_token: Annotated[str | None, Header()] = None,
) -> AppRow:
    """The app an ep.io route addresses by id, if the token's account is a member."""
    who = await _who(request, x_epio_token)
    return await app_for_member(c, who, await _app_name(c, app_id))


async def _epio_owned_app(
    app_id: RowId,
    request: Request,
    c: CurrentController,
    x_epio_token: Annotated[str | None, Header()] = None,
) -> AppRow:
    """The same, for what only the owner (or an admin) may do."""
    who = await _who(request, x_epio_token)
    return await app_for_owner(c, who, await _app_name(c, app_id))


# Every /control/app/ID/... route: authenticate, then resolve the app.
EpioApp = Annotated[AppRow, Depends(_epio_app)]
EpioOwnedApp = Annotated[AppRow, Depends(_epio_owned_app)]


@router.post("/control/token/")
async def token(
    request: Request,
    c: CurrentController,
    guard: CurrentGuard,
    x_epio_email: Annotated[str | None, Header()] = None,
    x_epio_password: Annotated[str | None, Header()] = None,
) -> Any:
    if not x_epio_email or not x_epio_password:
        return JSONResponse(
            {"message": "X-Epio-Email and X-Epio-Password are required"}, status_code=401
        )
    # The same limits as /api/login: this is the same password check.
    row = await check_password(request, c, guard, x_epio_email, x_epio_password)
    if row is None:
        return JSONResponse({"message": "Invalid email or password"}, status_code=401)
    return await c.store.issue_token(row.id, name="epio client")


@router.get("/control/app/name/{name}/")
async def app_by_name(
    name: str,
    request: Request,
    c: CurrentController,
    x_epio_token: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    who = await _who(request, x_epio_token)
    app = await app_for_member(c, who, name)
    return {"app": {"id": app.id}}


@router.post("/control/app/create/")
async def create(
    request: Request,
    c: CurrentController,
    name: Annotated[str, Form()] = "",
    x_epio_token: Annotated[str | None, Header()] = None,
) -> Any:
    who = await _who(request, x_epio_token)
    if name == "<random>":
        name = "app-" + secrets.token_hex(3)
    if (problem := app_name_problem(name)) is not None:
        return {"form": {"errors": {"name": [problem]}}}
    try:
        await c.store.create_app(name, who.id)
    except Conflict:
        return JSONResponse({"message": f"The app name {name} is already taken"}, status_code=409)
    return JSONResponse({"app": {"names": [name]}}, status_code=201)


@router.post("/control/app/{app_id}/delete/")
async def delete(
    app: EpioOwnedApp,
    c: CurrentController,
) -> dict[str, Any]:
    try:
        await lifecycle.delete_app(c, app)
    except ServiceError as exc:
        raise ApiError(exc.status, f"not deleted: {exc}") from None
    return {"message": f"{app.name} deleted"}


@router.post("/control/app/{app_id}/suspend/")
async def suspend(
    app: EpioApp,
    c: CurrentController,
) -> dict[str, Any]:
    await lifecycle.set_suspended(c, app, True)
    return {"message": f"{app.name} suspended"}


@router.post("/control/app/{app_id}/resume/")
async def resume(
    app: EpioApp,
    c: CurrentController,
) -> dict[str, Any]:
    await lifecycle.set_suspended(c, app, False)
    return {"message": f"{app.name} resumed"}


@router.get("/control/app/{app_id}/processes/")
async def processes(
    app: EpioApp,
    c: CurrentController,
) -> dict[str, Any]:
    statuses = c.soft.statuses()
    hosts = {h: s.heartbeat.hostname for h, s in c.soft.hosts.items()}
    out: dict[str, list[list[Any]]] = {}
    for p in sorted(await c.store.placements(app.name), key=lambda p: p.idx):
        st = statuses.get(p.instance_id)
        out.setdefault(p.process_type, []).append(
            [
                hosts.get(p.host_id, p.host_id),
                st.port if st else 0,
                st.state if st else "unknown",
                {
                    "memory_usage": round(st.memory_mb, 1) if st else 0,
                    "memory_limit": c.settings.instance_memory_mb,
                    "command_line": st.command if st else "",
                },
            ]
        )
    return {"processes": out}


@router.post("/account/sshkeys/")
async def sshkeys(
    request: Request,
    c: CurrentController,
    key: Annotated[str, Form()] = "",
    x_epio_token: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    who = await _who(request, x_epio_token)
    if not key:
        raise ApiError(400, "key is required")
    return {"fingerprint": await add_key(c, who.id, key)}
