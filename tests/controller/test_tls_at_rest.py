"""TLS private keys are sealed in the state database, like service credentials.

Attacks: read the state database's files (the database, its -wal and -shm) as
someone who got a copy of them, looking for the private key uploaded through
the API; and for a key an older Roost stored in clear, after the controller
read it once. The route table still carries the opened key to the routers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from roost.controller.desired import Reader
from roost.controller.store import Store
from roost.settings import Settings
from roost.state import tables as t
from roost.state.db import make_engine
from tests.controller.tlskit import HOST, Env, api_with_domain, files_of, secret_bytes, self_signed
from tests.migrated import migrated_sqlite


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with api_with_domain(tmp_path, Settings()) as e:
        yield e


def test_a_key_uploaded_through_the_api_is_not_in_the_database_files(env: Env) -> None:
    client, store, db, h = env
    cert, key = self_signed(HOST)
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
    cert, key = self_signed(HOST)
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
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url))
    store.create_app("shop", store.create_account("a@example.com"))
    cert, key = self_signed(HOST)
    with pytest.raises(RuntimeError, match="never stored clear"):
        store.put_certificate(store.app("shop").id, HOST, cert, key, 0.0)
    assert store.certificates() == []
    store.engine.dispose()
