"""Shared API plumbing: the controller handle, authentication, JSON errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Path, Request

from roost.controller.core import Controller
from roost.controller.service import ControllerService
from roost.controller.store import AppRow, NotFound

# ep.io's rule for app names, with a length limit that keeps hostnames valid.
APP_NAME = re.compile(r"^[a-z0-9_-]{1,30}$")


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


def account(
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
    row = controller(request).store.account_for_token(token)
    if row is None:
        raise ApiError(401, "invalid or revoked token")
    return Account(id=row.id, email=row.email, is_admin=bool(row.is_admin))


CurrentAccount = Annotated[Account, Depends(account)]
# Integers that reach the database: SQLite stores at most 64-bit signed.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
CurrentController = Annotated[Controller, Depends(controller)]
CurrentService = Annotated[ControllerService, Depends(service)]


def owned_app(c: Controller, who: Account, name: str) -> AppRow:
    """The app, if `who` may see it; 404 otherwise (no hint that it exists)."""
    try:
        app = c.store.app(name)
    except NotFound:
        raise ApiError(404, f"no app named {name}") from None
    if (
        app.owner_id != who.id
        and not who.is_admin
        and app.id not in c.store.apps_visible_to(who.id)
    ):
        raise ApiError(404, f"no app named {name}")
    return app


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    return {"message": message, **extra}
