"""The whole platform onto a fresh machine (`roost restore --from REPOSITORY`).

A platform (`roost up` on data directory A) serves an app pushed over git
that reads its PostgreSQL rows, a Redis key and files of its data
directory; they are written, everything is captured and proven, the
platform stops. A second data directory B, empty, is restored from A's
repository alone (and its password), `roost up` runs on it, and through
the router the app serves the same rows, key and files, from the same
release (no rebuild: the release and its image are the ones A served), and
its git repository is the one pushed. Nothing is left running."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import free_port, wait_until
from tests.e2e.platform import Platform
from tests.sshclient import git_over_ssh, ssh_opts
from tests.tmpfs import tmpfs_dir

pytestmark = pytest.mark.e2e

APP = "shop"
APP_PY = """
import os
import pathlib

import psycopg
import redis
from flask import Flask

app = Flask(__name__)


@app.route("/")
def index():
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        rows = [r[0] for r in conn.execute(
            "SELECT body FROM notes ORDER BY id"
            if conn.execute("SELECT to_regclass('notes')").fetchone()[0] else "SELECT 1 WHERE false"
        )]
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    data = pathlib.Path(os.environ["ROOST_DATA_DIR"])
    files = {p.name: p.read_text() for p in sorted(data.glob("*.txt"))}
    return {"rows": rows, "greeting": (r.get("greeting") or b"").decode(), "files": files}
"""
EPIO_INI = """[wsgi]
requirements = requirements.txt
entrypoint = app:app

[services]
postgres = true
redis = true
"""
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
REQUIREMENTS = "flask>=3.0\npsycopg[binary]>=3.1\nredis>=4.5\n"
EXPECTED = {
    "rows": ["first", "second"],
    "greeting": "hello",
    "files": {"report.txt": "the report\n"},
}


def _info(p: Platform, kind: str) -> dict[str, Any]:
    out = p.roost("services", "info", kind, "--json", "--app", APP).stdout
    info: dict[str, Any] = json.loads(out)
    return info


def _served(p: Platform) -> object:
    """What the app answers through the router: its JSON, or the status and body."""
    r = p.get(APP)
    return r.json() if r.status_code == 200 else f"{r.status_code}: {r.text[:300]}"


def _write(p: Platform, key: Path, tmp: Path) -> None:
    """Rows, a Redis key and a file of the data directory, as a user would."""
    with psycopg.connect(_info(p, "postgres")["url"], connect_timeout=10) as conn:
        conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes (body) VALUES ('first'), ('second')")
    r = _info(p, "redis")
    subprocess.run(
        ["redis-cli", "-h", r["host"], "-p", str(r["port"]), "--no-auth-warning",
         "SET", "greeting", "hello"],
        env={**os.environ, "REDISCLI_AUTH": r["password"]}, check=True, capture_output=True,
        timeout=30,
    )  # fmt: skip
    report = tmp / "report.txt"
    report.write_text("the report\n")
    scp = ["scp", "-O", *ssh_opts(key), "-P", str(p.ssh_port)]
    subprocess.run([*scp, str(report), f"vcs@127.0.0.1:{APP}/report.txt"], check=True, timeout=60)


def _capture(p: Platform) -> list[str]:
    """Everything of the app and the platform, captured; their ids (base
    backups aside: they do not come back with a platform)."""
    app = json.loads(p.roost("backups", "capture", APP, "--json").stdout)["entries"]
    platform = json.loads(p.roost("backups", "capture", "--platform", "--json").stdout)["entries"]
    taken = [e for e in app + platform if e["kind"] != "pgbase"]
    assert {e["kind"] for e in taken} == {"pgdump", "redis", "data", "git", "platform"}, taken
    return [e["id"] for e in taken]


def _verified(p: Platform, ids: list[str]) -> bool:
    entries = json.loads(p.roost("backups", "list", APP, "--json").stdout)["entries"]
    entries += json.loads(p.roost("backups", "list", "--all", "--json").stdout)["entries"]
    states = {e["id"]: e for e in entries}
    failed = [states[i] for i in ids if i in states and states[i]["state"] == "failed"]
    assert not failed, failed
    return all(i in states and states[i]["state"] == "verified" for i in ids)


# Two platforms one after the other, a build and its drills: minutes, not seconds.
@pytest.mark.timeout(600)
def test_the_whole_platform_comes_back_on_a_fresh_machine() -> None:
    # On a tmpfs: two platforms' clusters, base backups and repository, and
    # their fsyncs, seconds each on a busy disk (tests/tmpfs.py).
    with tmpfs_dir("roost-e2e-") as base:
        _whole_platform_comes_back(base)


def _whole_platform_comes_back(base: Path) -> None:
    env = {"ROOST_BACKUP_SCHEDULE": "off"}  # only the backups this test asks for
    a = Platform(base / "a", free_port(), free_port(), base / "a.log", env=env)
    b = Platform(base / "b", free_port(), free_port(), base / "b.log", env=env)
    try:
        a.start()
        key = base / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        a.roost("keys", "add", str(key.with_suffix(".pub")))
        src = base / "shop"
        src.mkdir()
        (src / "app.py").write_text(APP_PY)
        (src / "requirements.txt").write_text(REQUIREMENTS)
        subprocess.run(["git", "init", "-q", "-b", "main", str(src)], check=True)
        a.roost("apps", "create", APP)
        # Services from the first push on (its git backup is skipped: no commit yet).
        (src / "epio.ini").write_text(EPIO_INI)
        subprocess.run([*GIT, "-C", str(src), "add", "-A"], check=True)
        subprocess.run([*GIT, "-C", str(src), "commit", "-qm", "v1"], check=True)
        pushed = git_over_ssh(src, a.ssh_port, key, "push", f"vcs@127.0.0.1:{APP}", "main")
        assert pushed.returncode == 0 and "v1 is live" in pushed.stderr, pushed.stderr
        _write(a, key, base)
        wait_until(lambda: _served(a) == EXPECTED, 60, "the app serving what was written")
        release = json.loads(a.roost("releases", "--app", APP, "--json").stdout)

        ids = _capture(a)
        wait_until(lambda: _verified(a, ids), 180, "every capture proven by its drill")
        a.stop()

        restored = subprocess.run(
            [*b.command(), "restore", "--from", str(a.data / "backupd" / "repo"),
             "--password-file", str(a.data / "backupd" / "keys" / "restic.key")],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "run: roost --data" in restored.stdout
        again = subprocess.run(
            [*b.command(), "restore", "--from", str(a.data / "backupd" / "repo"),
             "--password-file", str(a.data / "backupd" / "keys" / "restic.key")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert again.returncode != 0 and "is not empty" in again.stderr

        b.start()
        seen: list[object] = []

        def same() -> bool:
            seen.append(_served(b))
            return seen[-1] == EXPECTED

        try:
            wait_until(same, 180, "the restored app")
        except AssertionError:
            raise AssertionError(f"the restored app served {seen[-1:]}, not {EXPECTED}") from None
        # The same release, its image not rebuilt; the repository as pushed.
        assert json.loads(b.roost("releases", "--app", APP, "--json").stdout) == release
        heads = git_over_ssh(src, b.ssh_port, key, "ls-remote", f"vcs@127.0.0.1:{APP}")
        local = subprocess.run(["git", "-C", str(src), "rev-parse", "main"], capture_output=True,
                               text=True, check=True).stdout.strip()  # fmt: skip
        assert f"{local}\trefs/heads/main" in heads.stdout, heads.stdout + heads.stderr
        listed = json.loads(b.roost("backups", "list", APP, "--json").stdout)["entries"]
        assert {e["id"] for e in listed} >= set(ids) - {i for i in ids if i.startswith("platform")}
    finally:
        try:
            b.stop()
        finally:
            try:
                a.stop()
            finally:
                for p in (a, b):
                    if p.log.exists():
                        print(p.log.read_text()[-5000:])
