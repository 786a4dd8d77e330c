"""Issue 22, the names and the API, through the same real platform: a tenant
tries to take another app's hostname, a collaborator tries owner powers, a
guesser tries passwords, and a deleted app's name is taken again."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import wait_until
from tests.security.conftest import HERE, World

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"


def account(world: World, email: str) -> str:
    """A plain (not admin) account, and a token for it from a real login."""
    r = world.api("POST", "/accounts", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = httpx.post(
        f"http://127.0.0.1:{world.platform.api_port}/api/login",
        json={"email": email, "password": PASSWORD},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


@pytest.fixture(scope="module")
def mallory(world: World) -> str:
    token = account(world, "mallory@example.com")
    r = world.api("POST", "/apps", token=token, json={"name": "mal"})
    assert r.status_code == 201, r.text
    return token


def test_a_domain_at_or_under_another_apps_hostname_is_refused(world: World, mallory: str) -> None:
    for name in ("victim.localhost", "www.victim.localhost", "VICTIM.localhost.", "localhost"):
        r = world.api("POST", "/apps/mal/domains", token=mallory, json={"hostname": name})
        assert r.status_code in (403, 409, 422), (name, r.status_code, r.text)
    r = world.api("GET", "/apps/mal/domains", token=mallory)
    assert r.json() == []
    assert world.platform.get("victim").text == "victim ok\n"


def test_a_collaborator_cannot_delete_or_take_over(world: World, mallory: str) -> None:
    r = world.api("POST", "/apps/victim/collaborators", json={"email": "mallory@example.com"})
    assert r.status_code == 201, r.text
    try:
        assert world.api("DELETE", "/apps/victim", token=mallory).status_code == 403
        r = world.api(
            "POST", "/apps/victim/domains", token=mallory, json={"hostname": "shop.example.com"}
        )
        assert r.status_code == 403
        r = world.api(
            "POST", "/apps/victim/collaborators", token=mallory, json={"email": "x@example.com"}
        )
        assert r.status_code == 403
        # What a collaborator may do, it still may: read the app's processes.
        assert world.api("GET", "/apps/victim/ps", token=mallory).status_code == 200
    finally:
        world.api("DELETE", "/apps/victim/collaborators/mallory@example.com")
    assert world.platform.get("victim").text == "victim ok\n"
    assert world.api("GET", "/apps/victim").status_code == 200


def test_a_login_brute_force_is_cut_off(world: World, mallory: str) -> None:
    email = "eve@example.com"
    r = world.api("POST", "/accounts", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    login = f"http://127.0.0.1:{world.platform.api_port}/api/login"
    codes = [
        httpx.post(
            login, json={"email": email, "password": f"guess-{i:04d}"}, timeout=60
        ).status_code
        for i in range(7)
    ]
    assert codes[:5] == [401] * 5 and codes[-1] == 429, codes
    # The right password does not help the guesser now...
    r = httpx.post(login, json={"email": email, "password": PASSWORD}, timeout=60)
    assert r.status_code == 429 and "Retry-After" in r.headers
    # ...while another account still logs in.
    r = httpx.post(login, json={"email": "mallory@example.com", "password": PASSWORD}, timeout=60)
    assert r.status_code == 200, r.text


def test_a_reused_name_starts_empty_and_is_another_user(world: World) -> None:
    p = world.platform
    p.roost("apps", "create", "reused")
    p.roost("deploy", str(HERE / "victim"), "--app", "reused")
    marker = uuid.uuid4().hex
    r = world.ssh("run", "reused", f"echo {marker} > $ROOST_DATA_DIR/left.txt; id -u")
    assert r.returncode == 0, r.stderr
    first_uid = int(r.stdout.split()[-1])
    p.roost("apps", "delete", "reused")
    p.roost("apps", "create", "reused")
    p.roost("deploy", str(HERE / "victim"), "--app", "reused")
    wait_until(lambda: p.get("reused").status_code == 200, 60, "the new app to serve")
    r = world.ssh("run", "reused", "ls -A $ROOST_DATA_DIR; id -u")
    assert r.returncode == 0, r.stderr
    assert "left.txt" not in r.stdout
    assert int(r.stdout.split()[-1]) != first_uid, "the new app got the old app's uid"
