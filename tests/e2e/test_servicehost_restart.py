"""The servicehost restarts; the apps' databases keep serving (issue 20).
Under steady load through the router on pages that read PostgreSQL and
Redis, the servicehost daemon is killed with SIGKILL (a crash): `roost up`
starts it again, the new daemon adopts the running servers, and no request
fails; the postmaster and the app's Redis are the same processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from roost.proc import upstate
from tests.conftest import REPO, wait_until
from tests.e2e.load import Load
from tests.e2e.platform import Platform, running_platform

pytestmark = pytest.mark.e2e

NOTE, CACHED = "kept through the restart", "from redis"
# The notes app's table (its migration 0001), made from here as the app's
# role rather than by a release command: what this test is about is the
# servicehost, not the release phase.
TABLE = (
    "CREATE TABLE notes_note (id bigserial PRIMARY KEY, text text NOT NULL,"
    " created timestamptz NOT NULL DEFAULT now())"
)


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    with running_platform() as p:
        yield p


def servicehost_pid(p: Platform) -> int:
    loaded = upstate.load(p.data)
    assert loaded is not None
    role = loaded[0].roles["servicehost"]
    return role.pid if role.state == "up" else 0


def server_pids(p: Platform, app: str) -> tuple[int, int]:
    """(postmaster, the app's Redis), as the servers record them."""
    root = p.data / "servicehost"
    postmaster = (root / "postgres" / "postmaster.pid").read_text().split("\n")[0]
    return int(postmaster), int((root / "redis" / app / "redis.pid").read_text())


def app_database(p: Platform, app: str) -> psycopg.Connection:
    """A connection as the app's own role, with the credentials the servicehost recorded."""
    state = json.loads((p.data / "servicehost" / "state.json").read_text())
    svc = state["services"][f"postgres/{app}"]
    return psycopg.connect(
        host="127.0.0.1", port=state["postgres"]["port"], user=svc["username"],
        password=svc["password"], dbname=svc["database"], autocommit=True,
    )  # fmt: skip


def test_a_killed_servicehost_drops_no_request(platform: Platform, tmp_path: Path) -> None:
    app = tmp_path / "notes"
    shutil.copytree(REPO / "examples" / "django-pg", app)
    platform.roost("apps", "create", "notes")
    platform.roost("deploy", str(app), "--app", "notes")
    with app_database(platform, "notes") as conn:
        conn.execute(TABLE)
        conn.execute("INSERT INTO notes_note (text) VALUES (%s)", (NOTE,))
    wait_until(lambda: NOTE in platform.get("notes", "/notes").text, 120, "the notes page")
    stored = httpx.post(
        f"http://127.0.0.1:{platform.router_port}/cache/greeting",
        data={"value": CACHED}, headers={"Host": "notes.localhost"}, timeout=30,
    )  # fmt: skip
    assert stored.status_code == 201, stored.text
    servers = server_pids(platform, "notes")
    daemon = servicehost_pid(platform)
    assert daemon

    db = Load(platform.router_port, "notes.localhost", "/notes", keep_alive=2, fresh=1,
              accept=lambda body: NOTE in body)  # fmt: skip
    cache = Load(platform.router_port, "notes.localhost", "/cache/greeting", keep_alive=1,
                 fresh=1, accept=lambda body: CACHED in body)  # fmt: skip
    with db, cache:
        wait_until(lambda: db.result.ok >= 20 and cache.result.ok >= 20, 60, "load running")
        os.kill(daemon, signal.SIGKILL)
        wait_until(lambda: servicehost_pid(platform) not in (0, daemon), 120, "a new servicehost")
        wait_until(
            lambda: "adopted the running server" in platform.log.read_text(errors="replace"),
            60,
            "the adoption",
        )
        ok = db.result.ok, cache.result.ok
        wait_until(
            lambda: db.result.ok >= ok[0] + 20 and cache.result.ok >= ok[1] + 20,
            60,
            "requests after the restart",
        )
    assert db.result.failures == [] and cache.result.failures == []
    assert server_pids(platform, "notes") == servers

    # Managed again: the new daemon reports the adopted Redis, its limit and use.
    def redis_reported() -> bool:
        out = platform.roost("services", "info", "redis", "--json", "--app", "notes").stdout
        info = json.loads(out)
        return bool(info["memory_limit_bytes"] == 16 << 20 and info["memory_used_bytes"] > 0)

    wait_until(redis_reported, 60, "the adopted Redis reported")
