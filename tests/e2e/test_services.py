"""Databases as services through the whole platform: a Django app with
PostgreSQL and Redis deploys, migrates through `ssh ... run`, stores a row and
a cache key over HTTP; removing the service leaves a restorable backup."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.builder.blobs import blob_bytes
from tests.conftest import REPO, wait_until
from tests.e2e.platform import Platform, running_platform
from tests.helloapp import hello_app
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


# ---- build-time configuration: bundle_config at module level (issue 19)

DJANGO_SETTINGS = """
# As ep.io taught: credentials from bundle_config, read when settings load
# (the build's import check and collectstatic load them too).
from bundle_config import config

_pg = config["postgres"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": _pg["host"], "PORT": _pg["port"], "NAME": _pg["database"],
        "USER": _pg["username"], "PASSWORD": _pg["password"],
    }
}
INSTALLED_APPS = ["django.contrib.staticfiles", "notes"]
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "notes" / "assets"]
STATIC_ROOT = BASE_DIR / "collected"
"""

DJANGO_VIEW = """

def database(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cur:
        cur.execute("select current_database(), current_user")
        name, user = cur.fetchone()
    return JsonResponse({"database": name, "user": user})
"""

# The Flask app reads bundle_config at import and, during its build, says what
# it can see: its own database, a digest of its password, and every
# bundle_config.py its sandbox can reach (another app's must not be there).
FLASK_APP = """
import hashlib
import os

import bundle_config
from bundle_config import config
from flask import Flask

DB = config["postgres"]
app = Flask(__name__)


# Every bundle_config file reachable from /, the builder's directory of builds
# and its own build's directory, past the directories it cannot list.
def _found() -> list[str]:
    skip = ("/usr", "/proc", "/sys", "/dev")
    own_build = os.path.dirname(os.path.dirname(bundle_config.__file__))
    hits = set()
    for start in ("/", os.path.dirname(own_build), own_build):
        for top, dirs, files in os.walk(start):
            dirs[:] = [d for d in dirs if os.path.join(top, d) not in skip]
            hits |= {os.path.join(top, f) for f in files if f.startswith("bundle_config")}
    return sorted(hits)


if os.environ.get("PORT") is None:  # the build's import check (no port yet)
    digest = hashlib.sha256(DB["password"].encode()).hexdigest()
    print("BUILD SEES", DB["database"], digest, os.environ.get("CFG_PROBE"), _found())


@app.route("/")
def index() -> dict[str, object]:
    return {"database": DB["database"], "password": DB["password"]}
"""


def test_bundle_config_at_build_time(platform: Platform, tmp_path: Path) -> None:
    """A Django app whose settings read bundle_config and a Flask app importing
    it at module level both build (import check, collectstatic), collect
    static and serve; the Flask build sees its own app's credentials and no
    other's, and its password is in no blob the builder stored."""
    django = tmp_path / "dcfg"
    shutil.copytree(REPO / "examples" / "django-pg", django)
    ini = (django / "epio.ini").read_text().replace("redis = true\n", "")
    (django / "epio.ini").write_text(
        ini.replace("base = .\n", "base = .\nappend_settings = false\n")
    )
    with (django / "notes" / "settings.py").open("a") as fh:
        fh.write(DJANGO_SETTINGS)
    (django / "notes" / "assets" / "css").mkdir(parents=True)
    (django / "notes" / "assets" / "css" / "cfg.css").write_text("body { color: teal }\n")
    with (django / "notes" / "views.py").open("a") as fh:
        fh.write(DJANGO_VIEW)
    urls = (django / "notes" / "urls.py").read_text()
    (django / "notes" / "urls.py").write_text(
        urls.replace("urlpatterns = [", 'urlpatterns = [\n    path("db", views.database),')
    )
    platform.roost("apps", "create", "dcfg")
    out = platform.roost("deploy", str(django), "--app", "dcfg").stdout
    assert "provisioned postgres" in out and "bundle_config: postgres" in out
    assert "-----> collect static (" in out
    db = wait_until(
        lambda: platform.get("dcfg", "/db").status_code == 200 and platform.get("dcfg", "/db"),
        60,
        "dcfg",
    ).json()
    assert db["database"] and db["user"]  # connected with bundle_config's credentials
    css = platform.get("dcfg", "/static/css/cfg.css")
    assert css.status_code == 200 and "teal" in css.text

    flask = tmp_path / "fcfg"
    hello_app(flask, "postgres")
    (flask / "app.py").write_text(FLASK_APP)
    # A release phase follows, so the build imports the app itself (without
    # one, the instances' start is the import check).
    (flask / "Procfile").write_text("release: python -c pass\n")
    platform.roost("apps", "create", "fcfg")
    platform.roost("config", "set", "CFG_PROBE=from-config-vars", "--app", "fcfg")
    out = platform.roost("deploy", str(flask), "--app", "fcfg").stdout
    own = wait_until(
        lambda: platform.get("fcfg").status_code == 200 and platform.get("fcfg").json(), 60, "fcfg"
    )
    assert isinstance(own, dict) and own["database"] != db["database"]
    seen = next(ln for ln in out.splitlines() if "BUILD SEES" in ln).split("BUILD SEES ")[1]
    name, digest, probe, found = seen.split(" ", 3)
    assert name == own["database"] and probe == "from-config-vars"
    assert digest == hashlib.sha256(own["password"].encode()).hexdigest()
    assert db["database"] not in found and "dcfg" not in found
    assert found.count("bundle_config.py") == 1  # its own build's alone

    secret = own["password"].encode()
    blobs = [p for p in (platform.data / "builder" / "store").rglob("*") if p.is_file()]
    assert blobs and not [p for p in blobs if secret in blob_bytes(p)]
