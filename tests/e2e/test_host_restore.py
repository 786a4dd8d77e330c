"""A servicehost that lost its data gets every app back, through the platform
(`roost up` runs a backupd): an app with PostgreSQL, Redis and a file in its
data directory (copied in over the gateway, as a user would) is captured and
proven with the platform; `roost backups restore-host` refuses the
servicehost while it holds services, changing nothing; the platform stops,
the servicehost's data directory is deleted, the platform starts again (the
servicehost fresh and empty); `roost backups restore-host` brings the app
back, and the credentials the app was given (DATABASE_URL, REDIS_URL,
unchanged) read the same rows and key, its data directory the same file.
While its data comes back the app shows its maintenance page (the router's
503), and after it the app serves its restored Redis key again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from roost.backups.drill import manifest
from roost.cli.client import resolve
from tests.conftest import wait_until
from tests.e2e.platform import running_platform
from tests.helloapp import hello_app

pytestmark = pytest.mark.e2e

APP = "shop"
SSH = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
]


MAINTENANCE = "The site is down for maintenance"
# The example app, plus a page that reads the key the test writes, with the
# app's own REDIS_URL (RESP over a socket: the example needs no client library).
GREETING_ROUTE = """

@app.route("/greeting")
def greeting() -> str:
    from urllib.parse import unquote, urlsplit

    u = urlsplit(os.environ["REDIS_URL"])
    word = unquote(u.password or "").encode()
    ask = b"*2\\r\\n$4\\r\\nAUTH\\r\\n$%d\\r\\n%s\\r\\n" % (len(word), word)
    ask += b"*2\\r\\n$3\\r\\nGET\\r\\n$8\\r\\ngreeting\\r\\n"
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(ask)
        got = b""
        while got.count(b"\\r\\n") < 3 and not got.endswith(b"$-1\\r\\n"):
            part = s.recv(4096)
            if not part:
                break
            got += part
    return got.decode().split("\\r\\n")[2] if got.count(b"\\r\\n") >= 3 else ""
"""


def _watch(
    get: Callable[[], httpx.Response], stop: threading.Event, seen: list[tuple[int, str]]
) -> None:
    """The app's page, asked again and again until `stop`: what it answered."""
    while not stop.is_set():
        try:
            r = get()
            seen.append((r.status_code, r.text))
        except httpx.HTTPError as exc:
            seen.append((0, repr(exc)))
        stop.wait(0.05)


def _rows(url: str) -> list[str]:
    with psycopg.connect(url, connect_timeout=10) as conn:
        return [r[0] for r in conn.execute("SELECT body FROM notes ORDER BY id")]


def _redis(r: dict[str, Any], *args: str) -> str:
    out = subprocess.run(
        ["redis-cli", "-h", r["host"], "-p", str(r["port"]), "--no-auth-warning", *args],
        env={**os.environ, "REDISCLI_AUTH": r["password"]},
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return out.stdout.strip()


# A build, two platform starts, drills and a restore: minutes.
@pytest.mark.timeout(600)
def test_every_app_comes_back_onto_a_servicehost_that_lost_its_data(tmp_path: Path) -> None:
    with running_platform({"ROOST_BACKUP_SCHEDULE": "off"}) as p:
        src = tmp_path / APP
        hello_app(src, "postgres", "redis")
        with open(src / "app.py", "a") as code:
            code.write(GREETING_ROUTE)
        p.roost("apps", "create", APP)
        p.roost("deploy", str(src), "--app", APP)
        info = {
            kind: json.loads(p.roost("services", "info", kind, "--json", "--app", APP).stdout)
            for kind in ("postgres", "redis")
        }
        url = info["postgres"]["url"]
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
            conn.execute("INSERT INTO notes (body) VALUES ('first'), ('second')")
        assert _redis(info["redis"], "SET", "greeting", "hello") == "OK"
        wait_until(lambda: p.get(APP, "/greeting").text == "hello", 60, "the app reads Redis")
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        p.roost("keys", "add", str(key.with_suffix(".pub")))
        report = tmp_path / "report.txt"
        report.write_text("the report\n")
        subprocess.run(
            ["scp", "-O", "-i", str(key), *SSH, "-P", str(p.ssh_port), str(report),
             f"vcs@127.0.0.1:{APP}/report.txt"],
            check=True, timeout=60,
        )  # fmt: skip
        appdata = p.data / "servicehost" / "appdata" / APP
        files = manifest(appdata)
        assert "report.txt" in files

        taken = json.loads(p.roost("backups", "capture", APP, "--json").stdout)["entries"]
        taken += json.loads(p.roost("backups", "capture", "--platform", "--json").stdout)["entries"]
        ids = [e["id"] for e in taken if e["kind"] != "pgbase"]
        assert sorted(i.split("-")[0] for i in ids) == ["data", "pgdump", "platform", "redis"]

        def verified() -> bool:
            entries = json.loads(p.roost("backups", "list", APP, "--json").stdout)["entries"]
            entries += json.loads(p.roost("backups", "list", "--all", "--json").stdout)["entries"]
            states = {e["id"]: e["state"] for e in entries}
            assert "failed" not in {states.get(i) for i in ids}, entries
            return all(states.get(i) == "verified" for i in ids)

        wait_until(verified, 180, "every capture proven by its drill")

        # While it holds services, the servicehost is refused, and nothing changes.
        state = (p.data / "servicehost" / "state.json").read_bytes()
        refused = p.roost("backups", "restore-host", "servicehost", "--yes", check=False)
        assert refused.returncode != 0 and "holds services already" in refused.stderr, refused
        assert (p.data / "servicehost" / "state.json").read_bytes() == state
        assert _rows(url) == ["first", "second"]

        # The servicehost's disk is lost: it comes back empty.
        p.stop()
        shutil.rmtree(p.data / "servicehost")
        p.start()
        with pytest.raises(psycopg.OperationalError):
            _rows(url)

        # The restore, with the app's page watched meanwhile.
        stop = threading.Event()
        seen: list[tuple[int, str]] = []
        watcher = threading.Thread(
            target=_watch, args=(lambda: p.get(APP, "/greeting"), stop, seen)
        )
        watcher.start()
        try:
            out = p.roost("backups", "restore-host", "servicehost", "--yes", "--json").stdout
        finally:
            stop.set()
            watcher.join()
        done = json.loads(out)
        # Its maintenance page while its data came back (suspended at its start,
        # resumed at its end: the restore's answer comes after both).
        assert any(code == 503 and MAINTENANCE in text for code, text in seen), seen
        assert not json.loads(p.roost("apps", "info", APP, "--json").stdout)["suspended"]
        wait_until(lambda: p.get(APP, "/greeting").text == "hello", 120, "the app serving again")
        assert done["ok"] and done["platform_backup"] in ids, done
        assert sorted((r["kind"], r["backup_id"]) for r in done["reports"]) == sorted(
            (i.split("-")[0], i) for i in ids if not i.startswith("platform")
        )
        # The credentials the app holds, unchanged, read the same data.
        again = json.loads(p.roost("services", "info", "postgres", "--json", "--app", APP).stdout)
        assert again["url"] == url
        assert _rows(url) == ["first", "second"]
        assert _redis(info["redis"], "GET", "greeting") == "hello"
        assert manifest(appdata) == files
        # Platform events say so: the refusal, then what came back from where.
        events = resolve(p.data).request("GET", "/api/dashboard")["events"]
        of_app = [(e["kind"], e["message"]) for e in events if e["kind"] in ("suspend", "resume")]
        assert of_app[:2] == [("resume", f"{APP} resumed"), ("suspend", f"{APP} suspended")], events
        kinds = {e["kind"]: e["message"] for e in events if e["kind"].startswith("servicehost-")}
        assert "holds services already" in kinds["servicehost-restore-failed"], events
        assert kinds["servicehost-restored"].startswith(
            f"servicehost from {done['platform_backup']}: 3 restored"
        ), events
