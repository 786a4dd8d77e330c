"""Shared API plumbing: the controller handle, authentication, JSON errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Path, Query, Request

from roost.controller.core import Controller
from roost.controller.ratelimit import LoginGuard, TooMany
from roost.controller.service import ControllerService
from roost.controller.store import AppRow, NotFound
from roost.netaddr import is_loopback

# ep.io's rule for app names, with a length limit that keeps hostnames valid.
APP_NAME = re.compile(r"^[a-z0-9_-]{1,30}$")
# Names no app may have: in a cluster each app's data directory is ROOT/APP
# of one SeaweedFS tree, whose filers read their own settings from its /etc
# (seaweedfs/filer.conf: replication, fsync, read-only per path; iam: S3
# identities) and keep message queues in /topics. An app named so would hold,
# and could rewrite, the filers' configuration for every app.
RESERVED_APP_NAMES = frozenset({"etc", "topics"})


def app_name_problem(name: str) -> str | None:
    """Why `name` cannot be an app's, or None."""
    if not APP_NAME.match(name):
        return (
            f"invalid app name {name!r}: use lower-case letters, digits, '-' and '_' (at most 30)"
        )
    if name in RESERVED_APP_NAMES:
        return f"the app name {name!r} is reserved (the shared data tree uses it): choose another"
    return None


@dataclass(frozen=True)
class Account:
    id: int
    email: str
    is_admin: bool


class ApiError(HTTPException):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(status_code=status, detail=message)


def controller(request: Request) -> Controller:
    return request.app.state.controller


def service(request: Request) -> ControllerService:
    return request.app.state.service


def login_guard(request: Request) -> LoginGuard:
    return request.app.state.login_guard


async def account(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_epio_token: Annotated[str | None, Header()] = None,
) -> Account:
    token = ""
    if authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    elif x_epio_token:
        token = x_epio_token.strip()
    if not token:
        raise ApiError(401, "authentication required: send 'Authorization: Bearer TOKEN'")
    store = controller(request).store
    row = await store.account_for_token(token)
    if row is None:
        if await store.token_expired(token):
            raise ApiError(401, "token expired: log in again ('roost login')")
        raise ApiError(401, "invalid or revoked token")
    return Account(id=row.id, email=row.email, is_admin=bool(row.is_admin))


CurrentAccount = Annotated[Account, Depends(account)]
# Integers that reach the database: SQLite stores at most 64-bit signed.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
RowIdQuery = Annotated[int | None, Query(ge=1, le=2**31 - 1)]  # the same, optional, in a query
CurrentController = Annotated[Controller, Depends(controller)]
CurrentService = Annotated[ControllerService, Depends(service)]
CurrentGuard = Annotated[LoginGuard, Depends(login_guard)]


async def _app_or_404(c: Controller, name: str) -> AppRow:
    try:
        return await c.store.app(name)
    except NotFound:
        raise ApiError(404, f"no app named {name}") from None


async def app_for_member(c: Controller, who: Account, name: str) -> AppRow:
    """The app, if `who` owns it, collaborates on it or is an admin; else 404.

    Members run the app: deploy, config, scale, restart, rollback, suspend,
    `run`, logs, releases, reading its services' credentials. An outsider gets
    the same 404 as for a missing app: no hint that it exists.
    """
    app = await _app_or_404(c, name)
    if (
        app.owner_id != who.id
        and not who.is_admin
        and app.id not in await c.store.apps_visible_to(who.id)
    ):
        raise ApiError(404, f"no app named {name}")
    return app


async def app_for_owner(c: Controller, who: Account, name: str) -> AppRow:
    """The app, if `who` owns it or is an admin.

    The owner alone decides what the app is and who touches it: deleting it,
    its collaborators, domains, certificates, adding or removing services.
    A collaborator gets 403 saying so (they know the app exists); an outsider
    gets 404 as from `app_for_member`.
    """
    app = await app_for_member(c, who, name)
    if app.owner_id != who.id and not who.is_admin:
        raise ApiError(403, f"only the owner of {name} can do this (you are a collaborator)")
    return app


def require_admin(who: Account, what: str) -> None:
    """Platform-wide views (hosts, servicehosts) are the operators' business."""
    if not who.is_admin:
        raise ApiError(403, f"{what}: operators (admin accounts) only")


async def metrics_reader(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> None:
    """Who may scrape /metrics: a scraper on this machine, or an admin's token.

    The metrics list every host and every app's instances, what /api/hosts
    shows, so the same rule from another machine (Prometheus sends the token
    with `authorization: {credentials: ...}`).
    """
    if request.client is not None and is_loopback(request.client.host):
        return
    require_admin(await account(request, authorization, None), "/metrics from another machine")


def client_address(request: Request) -> str:
    """The peer's address, as the per-address login limit counts it.

    X-Forwarded-For is not read: any client can write it, and a limit keyed
    on it would give each forged value a fresh budget.
    """
    return request.client.host if request.client is not None else "unknown"


def too_many(exc: TooMany) -> ApiError:
    err = ApiError(429, str(exc))
    err.headers = {"Retry-After": exc.retry_after_header}
    return err


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    return {"message": message, **extra}
