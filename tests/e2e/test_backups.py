"""Backups through the whole platform (`roost up` runs a backupd): a deploy of
an app with PostgreSQL and Redis is backed up before its release; a capture
is proven by restoring it (verified); data changed after it comes back with
`roost backups restore --id`, read through the app's own credentials."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest

import roost
from roost.servicehost.names import BACKUP_ROLE
from tests.conftest import processes_under, wait_until
from tests.e2e.platform import Platform, running_platform
from tests.helloapp import hello_app
from tests.sshclient import git_over_ssh

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    # Only the backups this test asks for: the schedule's own (a base backup
    # of the cluster, the platform) would run beside it at start. On a tmpfs:
    # base backups and restores are fsyncs, seconds each on a busy disk.
    with running_platform({"ROOST_BACKUP_SCHEDULE": "off"}) as p:
        yield p


def _info(platform: Platform, kind: str) -> dict[str, Any]:
    out = platform.roost("services", "info", kind, "--json", "--app", "shop").stdout
    return json.loads(out)  # type: ignore[no-any-return]


def _rows(url: str) -> list[str]:
    with psycopg.connect(url, connect_timeout=10) as conn:
        return [r[0] for r in conn.execute("SELECT body FROM notes ORDER BY id")]


def _redis(platform: Platform, *args: str) -> str:
    r = _info(platform, "redis")
    out = subprocess.run(
        ["redis-cli", "-h", r["host"], "-p", str(r["port"]), "--no-auth-warning", *args],
        env={**os.environ, "REDISCLI_AUTH": r["password"]},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.strip()


def _entries(platform: Platform) -> list[dict[str, Any]]:
    listing = json.loads(platform.roost("backups", "list", "shop", "--json").stdout)
    return listing["entries"]  # type: ignore[no-any-return]


def _programs(platform: Platform) -> set[str]:
    names = set()
    for p in processes_under(platform.data):
        with contextlib.suppress(psutil.Error):
            names.add(p.name())
    return names


def test_an_idle_platform_runs_no_postgres(platform: Platform) -> None:
    """First in the module: no app, no database, so the servicehost has not
    started its PostgreSQL (servicehost/pgdemand.py), backupd streams no
    WAL, and the platform's capture takes no base backup and fails nothing.
    The next test's app, with a database, starts it."""
    running = _programs(platform)
    assert not running & {"postgres", "pg_receivewal", "barman"}, running
    out = platform.roost("backups", "capture", "--platform", "--json").stdout
    taken = [(e["kind"], e["state"]) for e in json.loads(out)["entries"]]
    assert taken == [("platform", "taken")]
    assert "postgres" not in _programs(platform)


def test_capture_verify_and_restore(platform: Platform, tmp_path: Path) -> None:
    app = tmp_path / "shop"
    hello_app(app, "postgres", "redis")
    platform.roost("apps", "create", "shop")
    deployed = platform.roost("deploy", str(app), "--app", "shop").stdout
    assert "backing up before the release" in deployed and "v1 is live" in deployed
    assert "postgres" in _programs(platform)  # started for shop's database
    pre = [e for e in _entries(platform) if e["reason"] == "pre-release"]
    assert {e["kind"] for e in pre} == {"pgdump", "redis"}

    url = _info(platform, "postgres")["url"]
    with psycopg.connect(url, connect_timeout=10) as conn:
        conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes (body) VALUES ('first'), ('second')")
    assert _redis(platform, "SET", "greeting", "hello") == "OK"

    captured = json.loads(platform.roost("backups", "capture", "shop", "--json").stdout)
    ids = {e["kind"]: e["id"] for e in captured["entries"]}
    # The app's live data tree exists once its instances have run (before
    # the first release it did not), so it is captured and drilled too.
    assert set(ids) == {"pgdump", "redis", "data"}

    def verified() -> bool:
        states = {e["id"]: e["state"] for e in _entries(platform)}
        assert "failed" not in {states[i] for i in ids.values()}, _entries(platform)
        return all(states[i] == "verified" for i in ids.values())

    wait_until(verified, 120, "the captured backups' drills")
    shown = platform.roost("backups", "list", "shop").stdout
    assert "shop: ok" in shown
    metrics = json.loads((platform.data / "metrics.json").read_text())["backupd"]
    text = httpx.get(metrics, timeout=10).text
    assert 'roost_backup_verified_age_seconds{app="shop",kind="pgdump"}' in text

    with psycopg.connect(url, connect_timeout=10) as conn:
        conn.execute("UPDATE notes SET body = 'changed'")
        conn.execute("INSERT INTO notes (body) VALUES ('third')")
    assert _redis(platform, "SET", "greeting", "changed") == "OK"

    out = platform.roost("backups", "restore", "shop", "--id", ids["pgdump"], "--yes").stdout
    assert "restored from " + ids["pgdump"] in out and "backup taken first" in out
    assert _rows(url) == ["first", "second"]  # through the app's own role and database

    out = platform.roost("backups", "restore", "shop", "--id", ids["redis"], "--yes").stdout
    assert "Redis restored" in out
    assert _redis(platform, "GET", "greeting") == "hello"

    # the app is serving again (the restore suspended it meanwhile)
    assert not json.loads(platform.roost("apps", "info", "shop", "--json").stdout)["suspended"]
    reasons = [e["reason"] for e in _entries(platform)]
    assert reasons.count("before restore") == 2


def test_a_restore_that_fails_on_the_server_leaves_the_app_serving(platform: Platform) -> None:
    """After the test above: a dump taken, then the servicehost's PostgreSQL
    refuses every session of the backup role (CONNECTION LIMIT 0, as its
    superuser), so the restore's load fails on the server. The CLI exits
    non-zero saying why, and the app serves all along: at once after it,
    the same instances, its rows as they were."""
    out = platform.roost("backups", "capture", "shop", "--kind", "pgdump", "--json").stdout
    (dump,) = json.loads(out)["entries"]
    url = _info(platform, "postgres")["url"]
    rows = _rows(url)
    running = sorted((i["instance_id"], i["state"]) for i in platform.ps("shop"))
    assert running and all(state == "up" for _, state in running), running
    assert platform.get("shop").status_code == 200
    state = json.loads((platform.data / "servicehost" / "state.json").read_text())["postgres"]
    superuser = psycopg.conninfo.make_conninfo(
        host="127.0.0.1", port=state["port"], user=state["superuser"],
        password=state["password"], dbname="postgres",
    )  # fmt: skip

    def limit(n: int) -> None:
        with psycopg.connect(superuser, autocommit=True, connect_timeout=10) as c:
            c.execute(f"ALTER ROLE {BACKUP_ROLE} CONNECTION LIMIT {n}")  # type: ignore[arg-type]

    limit(0)
    try:
        done = platform.roost(
            "backups", "restore", "shop", "--id", dump["id"], "--yes", check=False
        )
    finally:
        limit(-1)
    assert platform.get("shop").status_code == 200  # at once: it never stopped
    assert sorted((i["instance_id"], i["state"]) for i in platform.ps("shop")) == running
    assert done.returncode != 0, done.stdout
    assert "too many connections" in done.stderr and "was left as it was" in done.stderr
    assert _rows(url) == rows
    assert not json.loads(platform.roost("apps", "info", "shop", "--json").stdout)["suspended"]


def test_point_in_time_restore_and_captures_before_a_removal(platform: Platform) -> None:
    """After the test above: a base backup (the platform's capture), rows at t1
    and t2, the table dropped; restored to t2: exactly t1's and t2's rows."""
    out = platform.roost("backups", "capture", "--platform", "--json").stdout
    assert {e["kind"] for e in json.loads(out)["entries"]} == {"platform", "pgbase"}
    url = _info(platform, "postgres")["url"]
    _sql(url, "INSERT INTO notes (body) VALUES ('t1')")
    t2 = _sql(url, "INSERT INTO notes (body) VALUES ('t2') RETURNING now()")
    # The second after t2's commit; the table is dropped once the clock passed it.
    at = (t2.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    wait_until(lambda: _sql(url, "SELECT now()") > t2 + timedelta(seconds=1.1), 10, "t2 + 1 s")
    _sql(url, "DROP TABLE notes")

    outside = platform.roost(
        "backups", "restore", "shop", "--at", "2001-01-01T00:00:00Z", "--yes", check=False
    )
    assert outside.returncode != 0 and "outside" in outside.stderr
    out = platform.roost("backups", "restore", "shop", "--at", at, "--yes").stdout
    assert "restored from " + at in out
    assert _rows(url) == ["first", "second", "t1", "t2"]

    # Removing a service backs it up first, and keeps that backup.
    platform.roost("services", "remove", "redis", "--yes", "--app", "shop")
    assert "services remove redis" in {e["reason"] for e in _entries(platform)}


def _sql(url: str, statement: str) -> Any:
    """One statement in its own transaction; the first column of its row, if any."""
    with psycopg.connect(url, connect_timeout=10) as conn:
        cur = conn.execute(statement)  # type: ignore[arg-type]
        row = cur.fetchone() if cur.description else None
    return row[0] if row else None


def test_the_first_git_push_of_an_app_with_services_is_backed_up(
    platform: Platform, tmp_path: Path
) -> None:
    """Services from the first push on: the pre-release capture finds the
    gateway's repository without a commit (no ref moves before the deploy
    succeeded), records its git backup as skipped with why, backs up the
    database, and the push goes live."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    platform.roost("keys", "add", str(key.with_suffix(".pub")))
    src = tmp_path / "blog"
    hello_app(src, "postgres")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(src)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "v1"], check=True)
    platform.roost("apps", "create", "blog")
    pushed = git_over_ssh(src, platform.ssh_port, key, "push", "vcs@127.0.0.1:blog", "main")
    assert pushed.returncode == 0 and "v1 is live" in pushed.stderr, pushed.stderr
    assert "git skipped (blog's repository has no commit yet" in pushed.stderr, pushed.stderr
    listing = json.loads(platform.roost("backups", "list", "blog", "--json").stdout)
    pre = {e["kind"]: e for e in listing["entries"] if e["reason"] == "pre-release"}
    assert set(pre) == {"pgdump", "git"}, listing["entries"]
    assert pre["pgdump"]["state"] in ("taken", "verified")
    assert pre["git"]["state"] == "skipped" and "no commit yet" in pre["git"]["message"]
    # Once pushed, the repository is backed up as any other.
    captured = json.loads(platform.roost("backups", "capture", "blog", "--json").stdout)
    assert {e["kind"]: e["state"] for e in captured["entries"]} == {
        "pgdump": "taken", "git": "taken", "data": "taken",
    }  # fmt: skip


def test_an_upgrade_backs_the_platform_up_before_its_migrations(platform: Platform) -> None:
    """Last in the module (it restarts the platform): `roost up` of a new
    Roost copies the state before the controller migrates it, and backupd
    keeps that copy in a platform backup with reason "pre-upgrade"."""
    platform.stop()
    started = platform.data / "controller" / "started.json"
    last = json.loads(started.read_text())
    assert last["version"] == roost.__version__
    started.write_text(json.dumps({**last, "version": "0.0.1"}))  # as an older Roost left it
    platform.start()
    (copy,) = (platform.data / "controller" / "pre-upgrade").iterdir()
    meta = copy / "meta.json"
    assert json.loads(meta.read_text())["reason"] == f"Roost goes from 0.0.1 to {roost.__version__}"
    wait_until(lambda: json.loads(meta.read_text())["captured"], 180, "the pre-upgrade backup")
    backup_id = json.loads(meta.read_text())["captured"]
    rec = json.loads((platform.data / "backupd" / "catalog" / f"{backup_id}.json").read_text())
    assert rec["entry"]["kind"] == "platform" and rec["entry"]["reason"] == "pre-upgrade"
    assert f"controller/pre-upgrade/{copy.name}/state.sqlite" in rec["facts"]["files"]
    # The next start of the same Roost is no upgrade.
    assert json.loads(started.read_text())["version"] == roost.__version__


def test_backupd_and_what_it_starts_yield_to_the_apps(platform: Platform) -> None:
    """On one machine backupd shares the CPU and disk with the apps: it runs
    niced (ROOST_BACKUP_NICE, 10) with the lowest best-effort I/O priority."""
    from roost.proc import upstate

    # By the pid roost up gives it (a role forked from its zygote has the
    # zygote's command line, roost.cli.zygote).
    status = upstate.load(platform.data)
    assert status is not None
    backupd = psutil.Process(status[0].roles["backupd"].pid)
    assert backupd.nice() == 10
    assert backupd.ionice().ioclass == psutil.IOPRIO_CLASS_BE and backupd.ionice().value == 7
