"""Password guessing through the real API: limited per address and per account,
and argon2 runs a few at a time in worker threads, never on the event loop.

Requests come from chosen client addresses (httpx's ASGI transport sets the
peer), through the whole FastAPI app and real argon2id verifications.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from roost.controller import store_access
from roost.controller.api.app import create_api
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.ratelimit import LoginGuard
from roost.controller.secretbox import SecretBox
from roost.controller.service import ControllerService
from roost.controller.services import ServiceBroker
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import make_engine
from tests.migrated import migrated_sqlite

PASSWORD = "correct horse battery"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    url = migrated_sqlite(tmp_path / "state.db")
    s = Store(make_engine(url))
    for email in ("victim@example.com", "bystander@example.com"):
        s.create_account(email, password=PASSWORD)
    yield s
    s.engine.dispose()


def make_api(store: Store, **guard: Any) -> Any:
    controller = Controller(AsyncStore(store), Settings(), "test")
    controller.services = ServiceBroker(controller.store, SecretBox(b"k" * 32), None)
    service = ControllerService(controller, builders=None)
    if guard:
        return create_api(controller, service, LoginGuard(**guard))
    return create_api(controller, service)


@asynccontextmanager
async def client_from(api: Any, address: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=api, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://controller") as c:
        yield c


async def login(c: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await c.post("/api/login", json={"email": email, "password": password})


async def test_guessing_one_account_is_cut_off(store: Store) -> None:
    api = make_api(store)
    async with client_from(api, "203.0.113.7") as attacker:
        statuses = [
            (await login(attacker, "victim@example.com", f"guess{i}")).status_code for i in range(5)
        ]
        assert statuses == [401] * 5
        r = await login(attacker, "victim@example.com", PASSWORD)
        assert r.status_code == 429, r.text
        assert "account" in r.json()["message"]
        assert 800 < int(r.headers["Retry-After"]) <= 900
    # A botnet's next address gets no fresh budget for that account...
    async with client_from(api, "198.51.100.9") as other:
        assert (await login(other, "VICTIM@example.com", "guess")).status_code == 429
        # ...while other accounts log in from anywhere.
        r = await login(other, "bystander@example.com", PASSWORD)
        assert r.status_code == 200 and r.json()["token"].startswith("rst_")


async def test_spraying_accounts_from_one_address_is_cut_off(store: Store) -> None:
    api = make_api(store)
    async with client_from(api, "203.0.113.8") as attacker:
        for i in range(10):
            r = await login(attacker, f"user{i}@example.com", "password1")
            assert r.status_code == 401
        r = await login(attacker, "bystander@example.com", PASSWORD)
        assert r.status_code == 429 and "address" in r.json()["message"]
        assert 0 < int(r.headers["Retry-After"]) <= 60
        # the ep.io token route counts against the same budget
        r = await attacker.post(
            "/control/token/",
            headers={"X-Epio-Email": "bystander@example.com", "X-Epio-Password": PASSWORD},
        )
        assert r.status_code == 429
    async with client_from(api, "192.0.2.1") as someone_else:
        assert (await login(someone_else, "bystander@example.com", PASSWORD)).status_code == 200


async def test_epio_token_route_is_limited_per_account(store: Store) -> None:
    api = make_api(store)
    for i in range(6):
        async with client_from(api, f"198.51.100.{i + 1}") as c:
            r = await c.post(
                "/control/token/",
                headers={"X-Epio-Email": "victim@example.com", "X-Epio-Password": f"g{i}"},
            )
            assert r.status_code == (401 if i < 5 else 429), (i, r.text)


async def test_new_tokens_are_limited(store: Store) -> None:
    api = make_api(store)
    async with client_from(api, "192.0.2.10") as c:
        r = await login(c, "bystander@example.com", PASSWORD)
        h = {"Authorization": f"Bearer {r.json()['token']}"}
        codes = [(await c.post("/api/tokens", json={}, headers=h)).status_code for _ in range(10)]
    # the login took one of the address's 10 a minute
    assert codes == [201] * 9 + [429]
    assert len(store.tokens(store.account_by_email("bystander@example.com").id)) == 10


class CountingHasher(PasswordHasher):
    """The real argon2id hasher, noting how many verifications overlap and where."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.calls = 0
        self.threads: set[int] = set()

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        with self.lock:
            self.running += 1
            self.calls += 1
            self.peak = max(self.peak, self.running)
            self.threads.add(threading.get_ident())
        try:
            return super().verify(hash, password)
        finally:
            with self.lock:
                self.running -= 1


async def test_argon2_runs_two_at_a_time_off_the_event_loop(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    hasher = CountingHasher()
    monkeypatch.setattr(store_access, "_hasher", hasher)
    api = make_api(store)

    async def one(i: int) -> int:
        async with client_from(api, f"10.20.0.{i + 1}") as c:
            return (await login(c, f"nobody{i}@example.com", "x")).status_code

    codes = await asyncio.gather(*(one(i) for i in range(12)))
    assert codes == [401] * 12
    assert hasher.calls == 12
    assert hasher.peak <= 2, f"{hasher.peak} argon2 verifications ran at once"
    assert threading.get_ident() not in hasher.threads


async def test_a_flood_is_refused_not_queued(store: Store) -> None:
    api = make_api(store, concurrency=1, max_waiting=2)

    async def one(i: int) -> httpx.Response:
        async with client_from(api, f"10.30.0.{i + 1}") as c:
            return await login(c, f"nobody{i}@example.com", "x")

    replies = await asyncio.gather(*(one(i) for i in range(12)))
    refused = [r for r in replies if r.status_code == 429]
    assert refused and all("in progress" in r.json()["message"] for r in refused)
    assert all(r.headers["Retry-After"] == "1" for r in refused)
    assert sum(r.status_code == 401 for r in replies) >= 3


def test_an_account_without_a_password_costs_a_real_verification() -> None:
    """The hash verified against when an account has no password is written
    out in the code: it must carry the hasher's own parameters (what a
    verification costs), and no password is accepted for such an account."""
    assert not store_access._hasher.check_needs_rehash(store_access._DUMMY_HASH)
    assert store_access.verify_password("", "") is False
    assert store_access.verify_password("", PASSWORD) is False
