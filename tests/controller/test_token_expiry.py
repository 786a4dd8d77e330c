"""Tokens can expire: an expired token is refused (401 "token expired"); tokens
issued before expiry existed stay valid through the migration."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from roost.controller.api.app import create_api
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.secretbox import SecretBox
from roost.controller.service import ControllerService
from roost.controller.services import ServiceBroker
from roost.controller.store import Store
from roost.controller.store_access import hash_token
from roost.settings import Settings
from roost.state import tables as t
from roost.state.db import alembic_config, make_engine, migrate, sqlite_url
from tests.migrated import migrated_sqlite

PASSWORD = "s3cret-password"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[TestClient, Store]]:
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url))
    store.create_account("me@example.com", password=PASSWORD)
    controller = Controller(AsyncStore(store), Settings(), "test")
    controller.services = ServiceBroker(controller.store, SecretBox(b"k" * 32), None)
    with TestClient(create_api(controller, ControllerService(controller, None))) as client:
        yield client, store
    controller.store.close()


def _age(store: Store, token: str, seconds: float) -> None:
    """Move a token's expiry `seconds` into the past, as if that time had gone by."""
    with store.engine.begin() as c:
        c.execute(
            sa.update(t.tokens)
            .where(t.tokens.c.token_hash == hash_token(token))
            .values(expires_at=t.tokens.c.expires_at - seconds)
        )


def test_a_login_token_with_a_lifetime_expires(env: tuple[TestClient, Store]) -> None:
    client, store = env
    r = client.post(
        "/api/login", json={"email": "me@example.com", "password": PASSWORD, "expires_in": 3600}
    )
    assert r.status_code == 200
    token, expires_at = r.json()["token"], r.json()["expires_at"]
    assert 3590 < expires_at - time.time() <= 3600
    h = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/account", headers=h).status_code == 200
    _age(store, token, 3601)
    r = client.get("/api/account", headers=h)
    assert r.status_code == 401 and r.json()["message"].startswith("token expired")
    assert client.get("/api/apps", headers=h).status_code == 401
    # over the ep.io header too
    assert client.get("/control/app/name/x/", headers={"X-Epio-Token": token}).status_code == 401
    assert store.account_for_token(token) is None


def test_api_tokens_take_a_lifetime_and_list_it(env: tuple[TestClient, Store]) -> None:
    client, store = env
    login = client.post("/api/login", json={"email": "me@example.com", "password": PASSWORD})
    assert login.json()["expires_at"] is None
    h = {"Authorization": f"Bearer {login.json()['token']}"}
    r = client.post("/api/tokens", json={"name": "ci", "expires_in": 86400}, headers=h)
    assert r.status_code == 201
    listed = {x["name"]: x for x in client.get("/api/tokens", headers=h).json()}
    assert listed["login"]["expires_at"] is None
    assert listed["ci"]["expires_at"] == pytest.approx(time.time() + 86400, abs=5)
    ci = {"Authorization": f"Bearer {r.json()['token']}"}
    _age(store, r.json()["token"], 86401)
    assert client.get("/api/account", headers=ci).json()["message"].startswith("token expired")
    assert client.get("/api/account", headers=h).status_code == 200


def test_bad_lifetimes_are_refused(env: tuple[TestClient, Store]) -> None:
    client, _ = env
    for bad in (0, 59, -5, 10**12, "soon"):
        r = client.post(
            "/api/login", json={"email": "me@example.com", "password": PASSWORD, "expires_in": bad}
        )
        assert r.status_code == 422, bad


def test_revoked_beats_expired(env: tuple[TestClient, Store]) -> None:
    """A revoked token says revoked, even past its expiry."""
    client, store = env
    account = store.account_by_email("me@example.com").id
    token = store.issue_token(account, "t", expires_at=time.time() - 1)
    store.revoke_token(account, store.tokens(account)[-1].id)
    r = client.get("/api/account", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "revoked" in r.json()["message"]


def test_tokens_from_before_the_migration_stay_valid(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "old.db")
    command.upgrade(alembic_config(url), "0006")
    engine = make_engine(url)
    with engine.begin() as c:
        c.execute(
            sa.text(
                "INSERT INTO accounts (email, password_hash, is_admin, created_at) "
                "VALUES ('old@example.com', '', 0, 0)"
            )
        )
        c.execute(
            sa.text(
                "INSERT INTO tokens (account_id, token_hash, name, created_at) "
                "VALUES (1, :h, 'old', 0)"
            ),
            {"h": hash_token("rst_old")},
        )
    engine.dispose()
    migrate(url)
    store = Store(make_engine(url))
    try:
        assert store.account_for_token("rst_old").email == "old@example.com"
        assert not store.token_expired("rst_old")
    finally:
        store.engine.dispose()
    command.downgrade(alembic_config(url), "0006")
    command.upgrade(alembic_config(url), "head")
