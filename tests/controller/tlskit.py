"""The API over a state database with a secrets key and an app with a domain,
and where a private key's bytes could be found, for the TLS tests."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from roost.controller.api.app import create_api
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.secretbox import SecretBox
from roost.controller.service import ControllerService
from roost.controller.store import Store
from roost.selfsigned import generate_self_signed
from roost.settings import Settings
from roost.state.db import make_engine
from tests.migrated import migrated_sqlite

HOST = "www.shop.example"


Env = tuple[TestClient, Store, Path, dict[str, str]]


def self_signed(host: str) -> tuple[str, str]:
    cert, key = generate_self_signed([host], days=30)
    return cert.decode(), key.decode()


def secret_bytes(key_pem: str) -> list[bytes]:
    """What of the key an attacker would look for: its DER (the secret), and
    the PEM's base64 body lines."""
    body = [ln for ln in key_pem.splitlines() if ln and not ln.startswith("-----")]
    return [base64.b64decode("".join(body)), *(ln.encode() for ln in body)]


def files_of(db: Path) -> bytes:
    """Every byte of the SQLite database as it is on disk (with -wal and -shm)."""
    parts = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    return b"".join(p.read_bytes() for p in parts if p.exists())


@contextmanager
def api_with_domain(tmp_path: Path, settings: Settings) -> Iterator[Env]:
    """The API on a store with a secrets key, an owner's app `shop` with the domain HOST."""
    db = tmp_path / "state.db"
    url = migrated_sqlite(db)
    store = Store(make_engine(url), secrets=SecretBox(b"k" * 32))
    controller = Controller(AsyncStore(store), settings, "test")
    api = create_api(controller, ControllerService(controller, builders=None))
    owner = store.create_account("a@example.com")
    h = {"Authorization": f"Bearer {store.issue_token(owner)}"}
    with TestClient(api) as client:
        assert client.post("/api/apps", json={"name": "shop"}, headers=h).status_code == 201
        r = client.post("/api/apps/shop/domains", json={"hostname": HOST}, headers=h)
        assert r.status_code == 201
        yield client, store, db, h
    controller.store.close()
