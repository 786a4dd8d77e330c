"""The controller's real API (FastAPI, SQLite state) with an owner, collaborators,
an outsider and an admin around two apps, for the API tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller.api.app import create_api
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.secretbox import SecretBox
from roost.controller.service import ControllerService
from roost.controller.services import ServiceBroker
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import make_engine
from tests.migrated import migrated_sqlite
from tests.releases import go_live

SPEC = AppSpec(
    processes={"web": ProcessSpec(name="web", kind="wsgi", entrypoint="app:app", web=True)}
)


class Env:
    def __init__(self, client: TestClient, store: Store, controller: Controller) -> None:
        self.client = client
        self.store = store
        self.controller = controller
        self.owner = self.headers("owner@example.com")
        self.collab = self.headers("collab@example.com")
        self.outsider = self.headers("outsider@example.com")
        self.admin = self.headers("root@example.com", admin=True)
        self.headers("friend@example.com")
        for name in ("shop", "blog"):
            r = client.post("/api/apps", json={"name": name}, headers=self.owner)
            assert r.status_code == 201
        # blog has no services: deleting it needs no servicehost (no final backup).
        blog = store.app("blog")
        store.add_collaborator(blog.id, store.account_by_email("collab@example.com").id)
        self.app = store.app("shop")
        v = store.create_release(self.app.id, "b1", "sha256:aa", "", SPEC, "", "first")
        go_live(store, self.app.id, v)
        store.add_domain(self.app.id, "www.shop.example")
        for email in ("collab@example.com", "other@example.com"):
            if store.account_by_email(email) is None:
                self.headers(email)
            store.add_collaborator(self.app.id, store.account_by_email(email).id)
        # A bound PostgreSQL, as the broker stores one once provisioned.
        assert controller.services is not None
        sealed = controller.services.box.seal(
            {
                "app": "shop",
                "kind": "postgres",
                "host": "127.0.0.1",
                "port": 5432,
                "database": "shop",
                "username": "shop",
                "password": "pw",
                "url": "postgresql://shop:pw@127.0.0.1:5432/shop",
            }
        )
        store.bind_service(self.app.id, "postgres", sealed)

    def headers(self, email: str, admin: bool = False) -> dict[str, str]:
        account = self.store.create_account(email, is_admin=admin)
        return {"Authorization": f"Bearer {self.store.issue_token(account)}"}

    def snapshot(self) -> dict[str, object]:
        """Everything an owner-only action could change."""
        return {
            "apps": [a.name for a in self.store.apps()],
            "domains": sorted(d.hostname for d in self.store.domains(self.app.id)),
            "certs": [c.hostname for c in self.store.certificates(self.app.id)],
            "collaborators": self.store.collaborators(self.app.id),
            "services": [r.kind for r in self.store.service_bindings(self.app.id)],
        }


@contextlib.contextmanager
def platform_api(tmp_path: Path) -> Iterator[tuple[TestClient, Store, Controller]]:
    """A controller's HTTP API over a fresh SQLite state database, nothing in it."""
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url))
    controller = Controller(AsyncStore(store), Settings(), "test")
    controller.services = ServiceBroker(controller.store, SecretBox(b"k" * 32), None)
    api = create_api(controller, ControllerService(controller, builders=None))
    with TestClient(api) as client:
        yield client, store, controller
    controller.store.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with platform_api(tmp_path) as (client, store, controller):
        yield Env(client, store, controller)
