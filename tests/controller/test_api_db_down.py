"""The API answers 503 with Retry-After while the state database cannot be
reached (a Patroni failover, a dead primary), not a 500 as for a bug: the
real store, whose database file's directory is taken away under it so that
every new connection fails as SQLAlchemy's OperationalError."""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from roost.controller.api.app import create_api
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.service import ControllerService
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import make_engine
from tests.migrated import migrated_sqlite


def test_an_unreachable_state_database_is_a_503_with_retry_after(tmp_path: Path) -> None:
    where = tmp_path / "db"
    where.mkdir()
    url = migrated_sqlite(where / "state.db")
    store = Store(make_engine(url))
    account = store.create_account("a@example.com")
    h = {"Authorization": f"Bearer {store.issue_token(account)}"}
    controller = Controller(AsyncStore(store), Settings(), "test")
    api = create_api(controller, ControllerService(controller, builders=None))
    try:
        with TestClient(api) as client:
            assert client.get("/api/apps", headers=h).status_code == 200
            shutil.rmtree(where)  # the database goes away
            store.engine.dispose()  # and no pooled connection is left to it
            r = client.get("/api/apps", headers=h)
            assert r.status_code == 503, r.text
            assert "state database is unavailable" in r.json()["message"]
            assert r.headers["Retry-After"] == "5"
    finally:
        controller.store.close()
