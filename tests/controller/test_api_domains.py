"""Custom domains through the real HTTP API: no app can take over a name in
the platform's default domain (another app's hostname, the domain itself,
the names of apps not yet created), and the route table never sends another
app's default hostname to the wrong app even when the database holds one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from roost.controller.api.app import create_api
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.routes import AppRouting, build_routes
from roost.controller.secretbox import SecretBox
from roost.controller.service import ControllerService
from roost.controller.store import Store
from roost.router.table import build_table
from roost.selfsigned import generate_self_signed
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.messages import TlsCertificate
from tests.migrated import migrated_sqlite

Env = tuple[TestClient, Store, dict[str, str], dict[str, str]]


@pytest.fixture
def env(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Env]:
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url), secrets=SecretBox(b"k" * 32))  # seals TLS keys
    domain = getattr(request, "param", "localhost")
    controller = Controller(AsyncStore(store), Settings(default_domain=domain), "test")
    api = create_api(controller, ControllerService(controller, builders=None))
    mallory = store.create_account("mallory@example.com")
    victim = store.create_account("victim@example.com")
    hm = {"Authorization": f"Bearer {store.issue_token(mallory)}"}
    hv = {"Authorization": f"Bearer {store.issue_token(victim)}"}
    with TestClient(api) as client:
        assert client.post("/api/apps", json={"name": "x"}, headers=hm).status_code == 201
        assert client.post("/api/apps", json={"name": "other"}, headers=hv).status_code == 201
        yield client, store, hm, hv
    controller.store.close()


def _add(client: TestClient, h: dict[str, str], host: str, app: str = "x") -> int:
    r = client.post(f"/api/apps/{app}/domains", json={"hostname": host}, headers=h)
    return r.status_code


@pytest.mark.parametrize(
    "host",
    [
        "other.localhost",  # another app's default hostname
        "OTHER.LOCALHOST.",  # the same, in capitals with a trailing dot
        " other.localhost ",
        "localhost",  # the default domain itself
        "LocalHost.",
        "www.other.localhost",  # under another app's hostname
        "future.localhost",  # the hostname of an app not created yet
        "*.localhost",  # every app name not created yet
        "*.other.localhost",
    ],
)
def test_takeover_of_platform_names_is_refused(env: Env, host: str) -> None:
    client, store, hm, _ = env
    assert _add(client, hm, host) == 422
    assert store.domains() == []  # nothing was written


@pytest.mark.parametrize("env", ["apps.example.com"], indirect=True)
@pytest.mark.parametrize(
    "host",
    [
        "apps.example.com",  # a multi-label default domain itself
        "Apps.Example.Com.",
        "other.apps.example.com",
        "*.apps.example.com",
        "*.example.com",  # covers every app name not created yet
    ],
)
def test_takeover_under_a_multi_label_default_domain_is_refused(env: Env, host: str) -> None:
    client, store, hm, _ = env
    assert _add(client, hm, host) == 422
    assert store.domains() == []
    # A name above the default domain is a domain of its own: fine.
    assert _add(client, hm, "example.com") == 201
    assert _add(client, hm, "www.x.apps.example.com") == 201


def test_refusal_says_why(env: Env) -> None:
    client, _, hm, _ = env
    r = client.post("/api/apps/x/domains", json={"hostname": "other.localhost"}, headers=hm)
    assert "platform's domain localhost" in r.json()["message"]
    r = client.post("/api/apps/x/domains", json={"hostname": "x.localhost"}, headers=hm)
    assert r.status_code == 422 and "default hostname" in r.json()["message"]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "10.0.0.7."])
def test_ip_literals_are_refused(env: Env, host: str) -> None:
    client, store, hm, _ = env
    assert _add(client, hm, host) == 422
    assert store.domains() == []


@pytest.mark.parametrize("host", ["*.*.example.com", "www.*.example.com", "*example.com"])
def test_malformed_wildcards_are_refused(env: Env, host: str) -> None:
    client, store, hm, _ = env
    assert _add(client, hm, host) == 422
    assert store.domains() == []


def test_own_subdomains_and_real_domains_are_accepted(env: Env) -> None:
    client, _, hm, _ = env
    for host, stored in [
        ("www.x.localhost", "www.x.localhost"),
        ("*.x.localhost", "*.x.localhost"),
        ("Shop.Example.COM.", "shop.example.com"),
        ("*.example.org", "*.example.org"),
        ("bücher.example", "xn--bcher-kva.example"),
    ]:
        r = client.post("/api/apps/x/domains", json={"hostname": host}, headers=hm)
        assert r.status_code == 201 and r.json() == {"hostname": stored}
    assert client.get("/api/apps/x/domains", headers=hm).json() == sorted(
        ["www.x.localhost", "*.x.localhost", "shop.example.com", "*.example.org",
         "xn--bcher-kva.example"]
    )  # fmt: skip
    # Removal takes the same spellings.
    assert client.delete("/api/apps/x/domains/SHOP.example.com.", headers=hm).status_code == 200


def test_a_domain_held_by_another_app_is_a_conflict(env: Env) -> None:
    client, store, hm, hv = env
    assert _add(client, hv, "shop.example.com", app="other") == 201
    r = client.post("/api/apps/x/domains", json={"hostname": "SHOP.example.com."}, headers=hm)
    assert r.status_code == 409 and "another app" in r.json()["message"]
    assert [(d.hostname, d.app_id) for d in store.domains()] == [
        ("shop.example.com", store.app("other").id)
    ]


def _cert(host: str) -> tuple[str, str]:
    cert, key = generate_self_signed([host], days=30)
    return cert.decode(), key.decode()


def test_an_old_row_naming_another_apps_host_is_never_routed(env: Env) -> None:
    """A takeover row written before the policy existed (straight into the
    store): the router still sends other.localhost to `other`, and `x` cannot
    install a certificate for it."""
    client, store, hm, _ = env
    x, other = store.app("x"), store.app("other")
    store.add_domain(x.id, "other.localhost")
    cert, key = _cert("other.localhost")
    r = client.post(
        "/api/apps/x/certs",
        json={"hostname": "other.localhost", "certificate": cert, "private_key": key},
        headers=hm,
    )
    assert r.status_code == 422 and store.certificates() == []
    # Even a certificate row that got in is not shipped with x's route.
    store.put_certificate(x.id, "other.localhost", cert, key, 0.0)
    tls = TlsCertificate(hostnames=["other.localhost"], cert_pem=cert, key_pem=key)
    routing = [
        # `aaa` sorts first: the router's first-come mapping would favour it.
        AppRouting(
            app="aaa", suspended=False, release=1, spec=None, static_digest="",
            domains=("other.localhost", "localhost", "www.aaa.localhost"),
            certificates=(tls,),
        ),
        AppRouting(app="other", suspended=False, release=1, spec=None, static_digest=""),
    ]  # fmt: skip
    routes = build_routes(routing, {}, "localhost", {})
    assert routes["aaa"].hostnames == ["aaa.localhost", "www.aaa.localhost"]
    assert routes["aaa"].certificates == []
    table = build_table(1, 1, routes.values(), "localhost")
    found = table.lookup(b"other.localhost")
    assert found is not None and found.route.app == "other"
    assert table.lookup(b"localhost") is None
    # The app's own removal still works on the old row.
    assert client.delete("/api/apps/x/domains/other.localhost", headers=hm).status_code == 200
    assert other.id not in {d.app_id for d in store.domains()}
