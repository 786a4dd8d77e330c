"""Accounts, login, tokens and SSH keys."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from roost.controller.api.deps import ApiError, CurrentAccount, CurrentController, RowId
from roost.controller.store import Conflict, NotFound

router = APIRouter(prefix="/api")

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class Credentials(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class NewAccount(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=8, max_length=1024)
    admin: bool = False


@router.post("/login")
async def login(body: Credentials, c: CurrentController) -> dict[str, str]:
    row = await asyncio.to_thread(c.store.check_password, body.email, body.password)
    if row is None:
        raise ApiError(401, "wrong email or password")
    return {"token": c.store.issue_token(row.id, name="login"), "email": row.email}


@router.post("/accounts", status_code=201)
async def create_account(
    body: NewAccount, who: CurrentAccount, c: CurrentController
) -> dict[str, Any]:
    if not who.is_admin:
        raise ApiError(403, "only an operator (admin account) can create accounts")
    if not EMAIL.match(body.email):
        raise ApiError(422, f"invalid email address {body.email!r}")
    try:
        account_id = await asyncio.to_thread(
            c.store.create_account, body.email, body.password, body.admin
        )
    except Conflict as exc:
        raise ApiError(409, str(exc)) from None
    return {"id": account_id, "email": body.email, "admin": body.admin}


@router.get("/account")
async def me(who: CurrentAccount) -> dict[str, Any]:
    return {"id": who.id, "email": who.email, "admin": who.is_admin}


class TokenBody(BaseModel):
    name: str = Field(default="", max_length=100)


@router.post("/tokens", status_code=201)
async def new_token(body: TokenBody, who: CurrentAccount, c: CurrentController) -> dict[str, str]:
    return {"token": c.store.issue_token(who.id, body.name)}


@router.get("/tokens")
async def list_tokens(who: CurrentAccount, c: CurrentController) -> list[dict[str, Any]]:
    return [
        {
            "id": r.id,
            "name": r.name,
            "created_at": r.created_at,
            "revoked": r.revoked_at is not None,
        }
        for r in c.store.tokens(who.id)
    ]


@router.delete("/tokens/{token_id}")
async def revoke_token(
    token_id: RowId, who: CurrentAccount, c: CurrentController
) -> dict[str, int]:
    try:
        c.store.revoke_token(who.id, token_id)
    except NotFound as exc:
        raise ApiError(404, str(exc)) from None
    return {"revoked": token_id}


class KeyBody(BaseModel):
    key: str = Field(min_length=20, max_length=16384)
    name: str = Field(default="", max_length=255)


def add_key(c: Any, account_id: int, key: str, name: str = "") -> str:
    try:
        return str(c.store.add_ssh_key(account_id, key, name))
    except ValueError as exc:
        raise ApiError(422, f"invalid SSH public key: {exc}") from None
    except Conflict as exc:
        raise ApiError(409, str(exc)) from None


@router.post("/keys", status_code=201)
async def add_ssh_key(body: KeyBody, who: CurrentAccount, c: CurrentController) -> dict[str, str]:
    return {"fingerprint": add_key(c, who.id, body.key, body.name)}


@router.get("/keys")
async def list_keys(who: CurrentAccount, c: CurrentController) -> list[dict[str, Any]]:
    return [
        {
            "fingerprint": r.fingerprint,
            "name": r.name,
            "key": r.public_key,
            "created_at": r.created_at,
        }
        for r in c.store.ssh_keys(who.id)
    ]


@router.delete("/keys/{fingerprint:path}")
async def remove_key(fingerprint: str, who: CurrentAccount, c: CurrentController) -> dict[str, str]:
    try:
        c.store.remove_ssh_key(who.id, fingerprint)
    except NotFound as exc:
        raise ApiError(404, str(exc)) from None
    return {"removed": fingerprint}
