"""ACME's storage and API: the account key sealed at rest, answers carried in
the route table to the routers, states and renewals through the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import select

from roost.cli import manage as cli_manage
from roost.controller import acme_plan
from roost.controller.acme_client import new_key_pem
from roost.controller.acme_plan import FAILING, Order
from roost.controller.api.certs import cert_rows
from roost.controller.desired import Reader
from roost.controller.routes import app_route, app_routing
from roost.controller.store_acme import Challenge
from roost.selfsigned import generate_self_signed
from roost.settings import Settings
from roost.state import tables as t
from tests.controller.tlskit import HOST, Env, api_with_domain, files_of, secret_bytes

DIRECTORY = "https://ca.example/directory"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with api_with_domain(tmp_path, Settings(acme_directory=DIRECTORY)) as e:
        yield e


def test_the_account_key_is_made_once_and_sealed_at_rest(env: Env) -> None:
    _, store, db, _ = env
    first = store.acme_account_key(DIRECTORY, new_key_pem())
    assert store.acme_account_key(DIRECTORY, new_key_pem()) == first  # every controller's
    assert store.acme_account_key("https://other.example/dir", new_key_pem()) != first
    store.engine.dispose()
    found = [s[:16] for s in secret_bytes(first) if s in files_of(db)]
    assert not found, f"the ACME account key is on disk in clear: {found}"


def test_answers_ride_in_the_apps_route_until_withdrawn(env: Env) -> None:
    _, store, _, _ = env
    app_id = store.app("shop").id
    reader = Reader()

    def route_answers() -> dict[str, str]:
        desired = reader.read(store, set())
        assert desired is not None, "publishing changes the desired state"
        inputs = desired.apps[app_id]
        assert inputs is not None
        return app_route(app_routing(inputs, [], None), {}, "localhost", {}).acme_challenges

    assert route_answers() == {}
    store.acme_publish([Challenge("tok1", HOST, app_id, "tok1.thumb")])
    store.acme_publish([Challenge("tok2", HOST, app_id, "tok2.thumb")])
    assert route_answers() == {"tok1": "tok1.thumb", "tok2": "tok2.thumb"}
    store.acme_withdraw(["tok1"])
    assert route_answers() == {"tok2": "tok2.thumb"}
    # What a controller that died mid-order left: withdrawn by age.
    with store.engine.connect() as c:
        created = c.execute(select(t.acme_challenges.c.created_at)).scalar_one()
    store.acme_withdraw([], older_than=created + 1)
    assert route_answers() == {}


def test_states_and_renewal_through_the_api(env: Env) -> None:
    client, store, _, h = env
    (row,) = client.get("/api/certs", headers=h).json()
    assert (row["app"], row["hostname"], row["source"], row["state"]) == (
        "shop", HOST, "acme", "pending",
    )  # fmt: skip
    # Nothing to renew before the lease holder wrote the domain's order row.
    r = client.post(f"/api/apps/shop/certs/{HOST}/renew", headers=h)
    assert r.status_code == 404
    o = Order(HOST, store.app("shop").id, "pending", next_at=0.0)
    store.acme_save_orders([acme_plan.failed(o, 1000.0, "refused", "connection refused", 60)])
    (row,) = client.get("/api/certs", headers=h).json()
    assert (row["state"], row["reason"], row["failures"], row["next_at"]) == (
        FAILING, "refused", 1, 1060.0,
    )  # fmt: skip
    assert row["detail"] == "connection refused"
    # The dashboard shows the same rows (its certificates section).
    board = client.get("/api/dashboard", headers=h).json()
    assert board["certificates"] == client.get("/api/certs", headers=h).json()
    r = client.post(f"/api/apps/shop/certs/{HOST.upper()}/renew", headers=h)
    assert r.status_code == 200, r.text
    (o,) = store.acme_orders()
    assert o.next_at > 1060.0 and o.failures == 1  # due now; the backoff's count stays
    r = client.post("/api/apps/shop/certs/not a host/renew", headers=h)
    assert r.status_code == 422
    # Another account sees none of it, and cannot renew it.
    other = store.create_account("b@example.com")
    h2 = {"Authorization": f"Bearer {store.issue_token(other)}"}
    assert client.get("/api/certs", headers=h2).json() == []
    assert client.post(f"/api/apps/shop/certs/{HOST}/renew", headers=h2).status_code == 404


def test_where_a_certificate_comes_from() -> None:
    o = Order("a.example.com", 1, FAILING, 5.0, "dns", "NXDOMAIN", 2)
    domains = [("shop", "a.example.com"), ("shop", "b.example.com"), ("shop", "*.example.org")]
    rows = cert_rows(domains, {"b.example.com": 9.0}, {"a.example.com": o}, True)
    assert [(r["hostname"], r["source"], r["state"]) for r in rows] == [
        ("*.example.org", "none", ""),  # HTTP-01 cannot prove a wildcard
        ("a.example.com", "acme", FAILING),
        ("b.example.com", "uploaded", ""),
    ]
    off = cert_rows([("shop", "c.example.com")], {}, {}, False)
    assert [(r["source"], r["state"]) for r in off] == [("none", "")]


def test_roost_certs_shows_whole_names_and_the_cas_words_in_80_columns(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, store, _, h = env
    o = Order(HOST, store.app("shop").id, "pending", next_at=0.0)
    detail = 'Get "http://www.shop.example/.well-known/acme-challenge/x": connection refused'
    store.acme_save_orders([acme_plan.failed(o, 1000.0, "refused", detail, 60)])
    out = Console(width=80, record=True)
    monkeypatch.setattr(cli_manage, "console", out)
    cli_manage._render_certs(client.get("/api/certs", headers=h).json())
    text = out.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    (row,) = [line for line in text.splitlines() if line.startswith("shop ")]
    assert row.split()[:5] == ["shop", HOST, "acme", "failing", "refused"]
    assert detail in " ".join(text.split())  # whole, if wrapped, under the table


def test_an_uploaded_certificate_takes_the_domain_from_acme(env: Env) -> None:
    client, store, _, h = env
    store.acme_save_orders([Order(HOST, store.app("shop").id, "valid", next_at=5.0)])
    cert, key = generate_self_signed([HOST], days=30)
    body = {"hostname": HOST, "certificate": cert.decode(), "private_key": key.decode()}
    assert client.post("/api/apps/shop/certs", json=body, headers=h).status_code == 201
    assert store.acme_orders() == []
    (row,) = client.get("/api/certs", headers=h).json()
    assert (row["source"], row["state"]) == ("uploaded", "")
