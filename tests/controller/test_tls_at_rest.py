"""TLS private keys are sealed in the state database, like service credentials.

Attacks: read the state database's files (the database, its -wal and -shm) as
someone who got a copy of them, looking for the private key uploaded through
the API; and for a key an older Roost stored in clear, after the controller
read it once. The route table still carries the opened key to the routers.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from roost.controller.api.app import create_api
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.desired import Reader
from roost.controller.secretbox import SecretBox
from roost.controller.service import ControllerService
from roost.controller.store import Store
from roost.selfsigned import generate_self_signed
from roost.settings import Settings
from roost.state import tables as t
from roost.state.db import make_engine, migrate, sqlite_url

HOST = "www.shop.example"
Env = tuple[TestClient, Store, Path, dict[str, str]]


def _cert(host: str) -> tuple[str, str]:
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
    url = sqlite_url(db)
    migrate(url)
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


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with api_with_domain(tmp_path, Settings()) as e:
        yield e


def test_a_key_uploaded_through_the_api_is_not_in_the_database_files(env: Env) -> None:
    client, store, db, h = env
    cert, key = _cert(HOST)
    r = client.post(
        "/api/apps/shop/certs",
        json={"hostname": HOST, "certificate": cert, "private_key": key},
        headers=h,
    )
    assert r.status_code == 201, r.text
    on_disk = files_of(db)
    assert cert.splitlines()[1].encode() in on_disk  # the certificate is public: stored as is
    found = [s[:16] for s in secret_bytes(key) if s in on_disk]
    assert not found, f"the private key is on disk in clear: {found}"
    # The routers still get it: the route table carries the opened key.
    app_id = store.app("shop").id
    desired = Reader().read(store, set())
    assert desired is not None
    inputs = desired.apps[app_id]
    assert inputs is not None
    (shipped,) = inputs.certificates
    assert (shipped.hostnames, shipped.cert_pem, shipped.key_pem) == ([HOST], cert, key)


def test_a_key_an_older_version_stored_in_clear_is_sealed_once_read(env: Env) -> None:
    _, store, db, _ = env
    cert, key = _cert(HOST)
    with store.engine.begin() as c:  # as an older Roost wrote it
        c.execute(
            insert(t.certificates).values(
                hostname=HOST, app_id=store.app("shop").id, cert_pem=cert, key_pem=key,
                not_after=0.0, created_at=0.0,
            )
        )  # fmt: skip
    (row,) = store.certificates()  # what every reconcile pass does
    assert row.key_pem == key
    with store.engine.connect() as c:
        stored = c.execute(select(t.certificates.c.key_pem)).scalar_one()
    assert stored != key and stored.startswith("sealed:")
    store.engine.dispose()  # the last connection checkpoints the WAL into the file
    on_disk = files_of(db)
    found = [s[:16] for s in secret_bytes(key) if s in on_disk]
    assert not found, f"the old clear key is still on disk: {found}"
    assert [r.key_pem for r in store.certificates()] == [key]  # and it still opens


def test_without_a_secrets_key_a_private_key_is_refused_not_stored(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "state.db")
    migrate(url)
    store = Store(make_engine(url))
    store.create_app("shop", store.create_account("a@example.com"))
    cert, key = _cert(HOST)
    with pytest.raises(RuntimeError, match="never stored clear"):
        store.put_certificate(store.app("shop").id, HOST, cert, key, 0.0)
    assert store.certificates() == []
    store.engine.dispose()
