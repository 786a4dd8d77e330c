"""Databases as services through the whole platform: a Django app with
PostgreSQL and Redis deploys, migrates through `ssh ... run`, stores a row and
a cache key over HTTP; removing the service leaves a restorable backup."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, wait_until
from tests.e2e.platform import Platform, running_platform
from tests.pgserver import pg_bin

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    with running_platform() as p:
        yield p


def _ssh(platform: Platform, key: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh",
            "-p",
            str(platform.ssh_port),
            "-i",
            str(key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "vcs@127.0.0.1",
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_django_with_postgres_and_redis(platform: Platform, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    platform.roost("keys", "add", str(key.with_suffix(".pub")))

    app_dir = tmp_path / "notes"
    shutil.copytree(REPO / "examples" / "django-pg", app_dir)
    platform.roost("apps", "create", "notes")
    out = platform.roost("deploy", str(app_dir), "--app", "notes").stdout
    assert "provisioned postgres" in out and "provisioned redis" in out

    info = wait_until(
        lambda: platform.get("notes").status_code == 200 and platform.get("notes").json(),
        60,
        "notes",
    )
    assert info == {
        "database": "postgresql",
        "cache": "django.core.cache.backends.redis.RedisCache",
    }

    migrate = _ssh(platform, key, "run", "notes", "python", "manage.py", "migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stderr
    assert "Applying notes.0001_initial... OK" in migrate.stdout

    host = {"Host": "notes.localhost"}
    base = f"http://127.0.0.1:{platform.router_port}"
    assert (
        httpx.post(f"{base}/notes", data={"text": "a row in postgres"}, headers=host).status_code
        == 201
    )
    assert httpx.get(f"{base}/notes", headers=host).json() == {"notes": ["a row in postgres"]}
    assert (
        httpx.post(f"{base}/cache/greeting", data={"value": "from redis"}, headers=host).status_code
        == 201
    )
    assert httpx.get(f"{base}/cache/greeting", headers=host).json()["value"] == "from redis"

    # The app's own credentials are in its environment (and bundle_config).
    script = (
        "'import os; from bundle_config import config; "
        'url = os.environ["DATABASE_URL"]; '
        'print(url.startswith("postgres"), config["postgres"]["database"] in url)\''
    )
    env = _ssh(platform, key, "run", "notes", "python", "-c", script)
    assert env.returncode == 0, env.stderr
    assert env.stdout.split() == ["True", "True"]

    services = json.loads(platform.roost("services", "list", "--json", "--app", "notes").stdout)
    assert {s["kind"] for s in services} == {"postgres", "redis"}

    # `roost services info` shows each service's limits, as the servicehost enforces them.
    info = platform.roost("services", "info", "postgres", "--json", "--app", "notes").stdout
    pg = json.loads(info)
    assert pg["connection_limit"] == 20 and pg["connections"] >= 0  # the default limit
    rd = json.loads(platform.roost("services", "info", "redis", "--json", "--app", "notes").stdout)
    assert rd["memory_limit_bytes"] == 16 << 20  # [redis] memory = 16
    assert 0 < rd["memory_used_bytes"] < rd["memory_limit_bytes"]
    assert rd["eviction_policy"] == "volatile-lru"
    shown = platform.roost("services", "info", "redis", "--app", "notes").stdout
    assert "MB (maxmemory)" in shown and "volatile-lru" in shown

    # Removing PostgreSQL takes a final backup first and says where it is.
    removed = platform.roost("services", "remove", "postgres", "--yes", "--json", "--app", "notes")
    backup = Path(json.loads(removed.stdout)["backup"])
    assert backup.is_file() and backup.stat().st_size > 0
    listing = subprocess.run(
        [pg_bin("pg_restore"), "--list", str(backup)], capture_output=True, text=True
    )
    assert listing.returncode == 0 and "notes_note" in listing.stdout
    assert "postgres" not in {
        s["kind"]
        for s in json.loads(platform.roost("services", "list", "--json", "--app", "notes").stdout)
    }
