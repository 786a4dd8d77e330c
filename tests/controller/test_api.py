from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from roost.controller.store import Store
from roost.wire.messages import LogLine
from tests.controller.apikit import platform_api


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[TestClient, Store]]:
    with platform_api(tmp_path) as (client, store, _):
        yield client, store


def _token(store: Store, email: str, admin: bool = False) -> dict[str, str]:
    account = store.create_account(email, is_admin=admin)
    return {"Authorization": f"Bearer {store.issue_token(account)}"}


def test_requires_a_valid_token(env: tuple[TestClient, Store]) -> None:
    client, _ = env
    r = client.get("/api/apps")
    assert r.status_code == 401 and "message" in r.json()
    r = client.get("/api/apps", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_create_list_info_delete(env: tuple[TestClient, Store]) -> None:
    client, store = env
    h = _token(store, "a@example.com")
    r = client.post("/api/apps", json={"name": "shop"}, headers=h)
    assert r.status_code == 201 and r.json()["name"] == "shop"
    assert [a["name"] for a in client.get("/api/apps", headers=h).json()] == ["shop"]
    info = client.get("/api/apps/shop", headers=h).json()
    assert info["current_release"] is None and info["instances"] == 0
    assert client.delete("/api/apps/shop", headers=h).status_code == 200
    assert client.get("/api/apps/shop", headers=h).status_code == 404


def test_refusals(env: tuple[TestClient, Store]) -> None:
    client, store = env
    h = _token(store, "a@example.com")
    assert client.post("/api/apps", json={"name": "Bad Name"}, headers=h).status_code == 422
    assert client.post("/api/apps", json={}, headers=h).status_code == 422
    assert client.post("/api/apps", content=b"{not json", headers=h).status_code == 422
    assert client.post("/api/apps", json={"name": "x" * 31}, headers=h).status_code == 422
    assert client.post("/api/apps", json={"name": "dup"}, headers=h).status_code == 201
    r = client.post("/api/apps", json={"name": "dup"}, headers=h)
    assert r.status_code == 409 and "already exists" in r.json()["message"]
    # The shared data tree's filers read their settings from its /etc and
    # keep queues in /topics: an app of that name would hold them.
    for reserved in ("etc", "topics"):
        r = client.post("/api/apps", json={"name": reserved}, headers=h)
        assert r.status_code == 422 and "reserved" in r.json()["message"], r.json()
    assert [a["name"] for a in client.get("/api/apps", headers=h).json()] == ["dup"]


def test_apps_are_private_to_their_owner(env: tuple[TestClient, Store]) -> None:
    client, store = env
    alice, bob = _token(store, "alice@example.com"), _token(store, "bob@example.com")
    client.post("/api/apps", json={"name": "alices"}, headers=alice)
    assert client.get("/api/apps", headers=bob).json() == []
    for method, path in [
        ("GET", "/api/apps/alices"),
        ("DELETE", "/api/apps/alices"),
        ("GET", "/api/apps/alices/ps"),
    ]:
        assert client.request(method, path, headers=bob).status_code == 404
    r = client.post("/api/apps/alices/builds", content=gzip.compress(b"x"), headers=bob)
    assert r.status_code == 404
    assert client.get("/api/apps/alices", headers=alice).status_code == 200


def test_upload_must_be_gzip(env: tuple[TestClient, Store]) -> None:
    client, store = env
    h = _token(store, "a@example.com")
    client.post("/api/apps", json={"name": "up"}, headers=h)
    r = client.post("/api/apps/up/builds", content=b"plain text", headers=h)
    assert r.status_code == 400 and "gzip" in r.json()["message"]


def test_build_without_builder_fails_cleanly(env: tuple[TestClient, Store]) -> None:
    client, store = env
    h = _token(store, "a@example.com")
    client.post("/api/apps", json={"name": "up"}, headers=h)
    r = client.post("/api/apps/up/builds", content=gzip.compress(b"x"), headers=h)
    assert r.status_code == 202
    build_id = r.json()["build_id"]
    status = client.get(f"/api/builds/{build_id}", headers=h).json()
    assert status["status"] == "failed" and "no builder" in status["error"]
    lines = [
        ln for ln in client.get(f"/api/builds/{build_id}/stream", headers=h).text.splitlines() if ln
    ]
    assert '"status": "failed"' in lines[-1]
    assert '"outcome": "failed: no builder configured"' in lines[-1]
    assert client.get("/api/builds/nope", headers=h).status_code == 404
    [deploy] = client.get("/api/apps/up/builds", headers=h).json()
    assert (deploy["build_id"], deploy["status"], deploy["final"], deploy["live"]) == (
        build_id, "failed", True, False
    )  # fmt: skip
    assert client.get("/api/apps/up/builds?n=0", headers=h).status_code == 422


def test_logs_give_more_than_the_old_5000_lines_and_refuse_past_the_limit(
    env: tuple[TestClient, Store],
) -> None:
    client, store = env
    h = _token(store, "a@example.com")
    client.post("/api/apps", json={"name": "chatty"}, headers=h)
    lines = [LogLine(app="chatty", process="web.1", source="app", ts=1.0, line=f"line {i}")
             for i in range(6000)]  # fmt: skip
    store.append_logs(lines)
    got = client.get("/api/apps/chatty/logs?n=6000", headers=h).text.splitlines()
    assert len(got) == 6000 and json.loads(got[-1])["line"] == "line 5999"
    assert client.get("/api/apps/chatty/logs?n=100001", headers=h).status_code == 422


def test_openapi_is_published(env: tuple[TestClient, Store]) -> None:
    client, _ = env
    spec = client.get("/api/openapi.json").json()
    assert "/api/apps" in spec["paths"]


def test_metrics_are_exposed(env: tuple[TestClient, Store]) -> None:
    client, store = env
    controller = client.app.state.controller  # type: ignore[attr-defined]
    import time

    from roost.wire.messages import Heartbeat, InstanceStatus

    controller.soft.record(
        Heartbeat(
            host_id="h1",
            hostname="h1",
            instances=[
                InstanceStatus(
                    instance_id="i1", app="a", release=1, process_type="web", state="up", restarts=3
                )
            ],
        ),
        time.monotonic(),
    )
    client.get("/api/health")
    # From another machine (the test client's peer is not loopback): an admin's token.
    assert client.get("/metrics").status_code == 401
    text = client.get("/metrics", headers=_token(store, "op@x.org", admin=True)).text
    assert 'roost_api_requests_total{method="GET",route="/api/health",status="200"}' in text
    assert 'roost_heartbeat_age_seconds{host="h1"}' in text
    assert 'roost_instance_restarts{app="a",instance="i1"} 3.0' in text


def test_a_deploys_closing_lines_reach_its_stream_when_the_end_lands_between_reads(
    env: tuple[TestClient, Store],
) -> None:
    """The final move and its closing lines are committed together; the
    stream must show the lines even when that commit lands between its read
    of the lines and its read of the status."""
    import dataclasses

    from roost.controller.store import LogLine

    client, store = env
    h = _token(store, "a@example.com")
    client.post("/api/apps", json={"name": "up"}, headers=h)
    build_id = client.post("/api/apps/up/builds", content=gzip.compress(b"x"), headers=h).json()[
        "build_id"
    ]
    controller = client.app.state.controller  # type: ignore[attr-defined]
    ended = False
    real_logs, real_build = controller.store.logs, controller.store.build

    async def logs(*args: object) -> object:
        nonlocal ended
        rows = await real_logs(*args)
        if not ended and not rows:  # the end commits right after a read that found none
            ended = True
            store.append_logs(
                [LogLine(app="up", ts=0.0, source="build", process=build_id, line="v1 is live")]
            )
        return rows

    async def build(build_id: str) -> object:
        row = await real_build(build_id)
        return row if ended else dataclasses.replace(row, status="building")

    controller.store.logs, controller.store.build = logs, build
    text = client.get(f"/api/builds/{build_id}/stream", headers=h).text
    assert '"line": "v1 is live"' in text
