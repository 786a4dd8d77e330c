"""Accounts, login, tokens and SSH keys."""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from roost.controller.api.deps import (
    ApiError,
    CurrentAccount,
    CurrentController,
    CurrentGuard,
    RowId,
    client_address,
    too_many,
)
from roost.controller.core import Controller
from roost.controller.ratelimit import LoginGuard, TooMany
from roost.controller.store import Conflict, NotFound
from roost.controller.store_access import hash_password, verify_password

router = APIRouter(prefix="/api")

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


# Token lifetimes: a minute at least, ten years at most; none given: until revoked.
ExpiresIn = Field(default=None, ge=60, le=10 * 365 * 86400)


class Credentials(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)
    expires_in: int | None = ExpiresIn


def expiry(expires_in: int | None) -> float | None:
    return time.time() + expires_in if expires_in else None


async def check_password(
    request: Request, c: Controller, guard: LoginGuard, email: str, password: str
) -> Any:
    """The account when the password is right, else None; 429 past the limits.

    Shared by `/api/login` and ep.io's `/control/token/`. The account is
    read through the store; the argon2 verification runs in a worker thread
    behind the guard's semaphore (never on the store's executor: a flood of
    logins must not hold up every state query).
    """
    try:
        guard.admit_login(client_address(request), email)
        row = await c.store.account_by_email(email)
        stored = row.password_hash if row is not None else ""
        ok = await guard.hash_work(verify_password, stored, password)
    except TooMany as exc:
        raise too_many(exc) from None
    if not ok:
        return None
    guard.succeeded(email)
    return row


class NewAccount(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=8, max_length=1024)
    admin: bool = False


@router.post("/login")
async def login(
    body: Credentials, request: Request, c: CurrentController, guard: CurrentGuard
) -> dict[str, Any]:
    row = await check_password(request, c, guard, body.email, body.password)
    if row is None:
        raise ApiError(401, "wrong email or password")
    expires_at = expiry(body.expires_in)
    token = await c.store.issue_token(row.id, name="login", expires_at=expires_at)
    return {"token": token, "email": row.email, "expires_at": expires_at}


@router.post("/accounts", status_code=201)
async def create_account(
    body: NewAccount, who: CurrentAccount, c: CurrentController, guard: CurrentGuard
) -> dict[str, Any]:
    if not who.is_admin:
        raise ApiError(403, "only an operator (admin account) can create accounts")
    if not EMAIL.match(body.email):
        raise ApiError(422, f"invalid email address {body.email!r}")
    try:
        # Hashing the password costs what a verification does: same semaphore.
        hashed = await guard.hash_work(hash_password, body.password)
        account_id = await c.store.create_account_hashed(body.email, hashed, body.admin)
    except TooMany as exc:
        raise too_many(exc) from None
    except Conflict as exc:
        raise ApiError(409, str(exc)) from None
    return {"id": account_id, "email": body.email, "admin": body.admin}


@router.get("/account")
async def me(who: CurrentAccount) -> dict[str, Any]:
    return {"id": who.id, "email": who.email, "admin": who.is_admin}


class TokenBody(BaseModel):
    name: str = Field(default="", max_length=100)
    expires_in: int | None = ExpiresIn


@router.post("/tokens", status_code=201)
async def new_token(
    body: TokenBody,
    request: Request,
    who: CurrentAccount,
    c: CurrentController,
    guard: CurrentGuard,
) -> dict[str, Any]:
    try:
        guard.admit_token(client_address(request), who.id)
    except TooMany as exc:
        raise too_many(exc) from None
    expires_at = expiry(body.expires_in)
    return {
        "token": await c.store.issue_token(who.id, body.name, expires_at),
        "expires_at": expires_at,
    }


@router.get("/tokens")
async def list_tokens(who: CurrentAccount, c: CurrentController) -> list[dict[str, Any]]:
    return [
        {
            "id": r.id,
            "name": r.name,
            "created_at": r.created_at,
            "revoked": r.revoked_at is not None,
            "expires_at": r.expires_at,
        }
        for r in await c.store.tokens(who.id)
    ]


@router.delete("/tokens/{token_id}")
async def revoke_token(
    token_id: RowId, who: CurrentAccount, c: CurrentController
) -> dict[str, int]:
    try:
        await c.store.revoke_token(who.id, token_id)
    except NotFound as exc:
        raise ApiError(404, str(exc)) from None
    return {"revoked": token_id}


class KeyBody(BaseModel):
    key: str = Field(min_length=20, max_length=16384)
    name: str = Field(default="", max_length=255)


async def add_key(c: Controller, account_id: int, key: str, name: str = "") -> str:
    try:
        return str(await c.store.add_ssh_key(account_id, key, name))
    except ValueError as exc:
        raise ApiError(422, f"invalid SSH public key: {exc}") from None
    except Conflict as exc:
        raise ApiError(409, str(exc)) from None


@router.post("/keys", status_code=201)
async def add_ssh_key(body: KeyBody, who: CurrentAccount, c: CurrentController) -> dict[str, str]:
    return {"fingerprint": await add_key(c, who.id, body.key, body.name)}


@router.get("/keys")
async def list_keys(who: CurrentAccount, c: CurrentController) -> list[dict[str, Any]]:
    return [
        {
            "fingerprint": r.fingerprint,
            "name": r.name,
            "key": r.public_key,
            "created_at": r.created_at,
        }
        for r in await c.store.ssh_keys(who.id)
    ]


@router.delete("/keys/{fingerprint:path}")
async def remove_key(fingerprint: str, who: CurrentAccount, c: CurrentController) -> dict[str, str]:
    try:
        await c.store.remove_ssh_key(who.id, fingerprint)
    except NotFound as exc:
        raise ApiError(404, str(exc)) from None
    return {"removed": fingerprint}
