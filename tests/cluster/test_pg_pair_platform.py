"""Issue 16 through the whole platform: an app's database on a servicehost
pair set up by `roost cluster init`, the servicehost holding the primary
killed under the app's writes.

Namespace hosts: a controller, a runner, a router and two servicehosts;
etcd (`roost statedb`, `--etcd-hosts`) on the controller's host and both
servicehosts; the state database one PostgreSQL in the root namespace, as
the other cluster tests have it. `cluster init` pairs the servicehosts,
each servicehost starts its Patroni member itself, the controller records
the pair, and an app (tests/cluster/pairapp) deployed with PostgreSQL and
Redis gets credentials naming its runner's data proxy, which the runner
serves from what its assignment lists. The app inserts one row per request
(acknowledged only once committed); the test asks through the router, one
row at a time, then powers the primary's servicehost off: writes resume
within 30 s through the same address (the app reconnects to DATABASE_URL),
and every row the app saw committed is there afterwards, read through the
app; its Redis answers through REDIS_URL too.

First, with a backup host (bak1) in the cluster: a dump of the app's
database taken and proven by backupd, more rows, and `roost backups
restore --id` through the CLI: the app reads the restored rows through its
DATABASE_URL, the standby holds them too. Then a restore that fails on the
server (the pair's primary refuses the backup role's sessions for the load):
the app serves throughout, the same instances, its rows as they were.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from roost.servicehost.names import BACKUP_ROLE
from roost.servicehost.pgpair import load_plan
from roost.wire.messages import DATA_PROXY_HOST
from tests.cluster.cluster import wait_for
from tests.cluster.harness import Host
from tests.cluster.paircluster import (
    APP,
    PairCluster,
    Writer,
    app_get,
    pair_cluster,
    proxy_checked,
    proxy_stat,
    redis_whole,
)

pytestmark = pytest.mark.cluster

RESUME_S = 30.0  # issue 16: the app's writes resume within 30 s


DRILL_S = 180  # backupd proves a dump by restoring it into a scratch server


@pytest.fixture(scope="module")
def rc(cluster_ok: None) -> Iterator[PairCluster]:
    # A backup host too (its schedule off: only the backups a test asks for).
    env = {"ROOST_BACKUP_SCHEDULE": "off"}
    with pair_cluster("roost-pg-pair-", env=env, backupds=1) as c:
        yield c


def write(rc: PairCluster, n: int) -> None:
    """Row n, committed by the app (through its runner's data proxy)."""
    r = httpx.post(f"{rc.router_url()}/write/{n}", headers={"Host": f"{APP}.localhost"}, timeout=10)
    assert (r.status_code, r.text) == (200, f"ok {n}"), r.text


def backup_state(rc: PairCluster, backup_id: str) -> str:
    """The backup's state once its drill has ruled ("" before)."""
    entries = json.loads(rc.cli("backups", "list", APP, "--json").stdout)["entries"]
    (e,) = [e for e in entries if e["id"] == backup_id]
    return "" if e["state"] == "taken" else str(e["state"])


def standby_ids(rc: PairCluster, standby: Host, db_url: str) -> list[int] | None:
    """The app's rows as the standby has them (its own credentials, read
    on the standby's PostgreSQL itself, not through the proxy)."""
    url = urlsplit(db_url)
    try:
        with psycopg.connect(
            host=standby.ip, port=5434, user=url.username, password=url.password,
            dbname=url.path.lstrip("/"), connect_timeout=3,
        ) as conn:  # fmt: skip
            return [r[0] for r in conn.execute("SELECT id FROM t ORDER BY id")]
    except psycopg.Error:
        return None


def test_a_backup_restored_through_the_platform_on_the_pair(rc: PairCluster) -> None:
    """`roost backups capture` and `restore --id` for an app on a pair, through
    the CLI, the API, backupd's RPCs and the servicehost daemons (not the
    stand-ins of test_pair_backups): the app reads the restored rows through
    its usual DATABASE_URL, and the standby has them too."""
    primary = wait_for(rc.primary, 30, "the pair's primary")
    standby = next(h for h in rc.pair if h is not primary)
    # The runner's data proxy listens once its assignment named the pair
    # (a moment after the deploy) and routes once its checks answered.
    wait_for(lambda: proxy_checked(rc), 60, "the data proxy's first checks")
    for n in range(1, 11):
        write(rc, n)
    out = rc.cli("backups", "capture", APP, "--kind", "pgdump", "--json").stdout
    (dump,) = json.loads(out)["entries"]
    assert wait_for(lambda: backup_state(rc, dump["id"]), DRILL_S, "the dump's drill") == (
        "verified"
    )
    for n in range(11, 21):
        write(rc, n)

    out = rc.cli("backups", "restore", APP, "--id", dump["id"], "--yes", "--json").stdout
    done = json.loads(out)
    assert done["safety_backup"] and done["kept"], done
    # Through the same address: the app's connection to the swapped-out
    # database is cut, and its next one reaches the restored one.
    ids = wait_for(
        lambda: (r := app_get(rc, "/ids")).status_code == 200 and r.json(), 60, "the app's rows"
    )
    assert ids == list(range(1, 11)), ids
    db_url = app_get(rc, "/env/DATABASE_URL").text
    wait_for(
        lambda: standby_ids(rc, standby, db_url) == list(range(1, 11)),
        30,
        "the standby to hold the restored rows",
    )
    write(rc, 21)  # the app writes on after it
    assert not json.loads(rc.cli("apps", "info", APP, "--json").stdout)["suspended"]


def instances(rc: PairCluster) -> list[tuple[str, str]]:
    """The app's instances and their states, as the controller knows them."""
    return sorted((i["instance_id"], i["state"]) for i in rc.api("GET", f"/api/apps/{APP}/ps"))


def test_a_restore_that_fails_on_the_server_leaves_the_app_serving(rc: PairCluster) -> None:
    """The dump taken, then the pair's primary refuses every session of the
    backup role (CONNECTION LIMIT 0, set as the pair's superuser), so the
    restore's load fails on the server. The CLI exits non-zero saying why,
    the app's events say so, and the app serves all along: at once after
    the CLI returns, through the router, the same instances running (none
    stopped and started again), its rows as they were; it writes on."""
    write(rc, 30)
    out = rc.cli("backups", "capture", APP, "--kind", "pgdump", "--json").stdout
    (dump,) = json.loads(out)["entries"]
    write(rc, 31)  # after the dump: a restore that went through would lose it
    rows = app_get(rc, "/ids").json()
    assert rows[-2:] == [30, 31], rows
    running = instances(rc)
    assert running and all(state == "up" for _, state in running), running
    primary = wait_for(rc.primary, 30, "the pair's primary")
    plan = load_plan(primary.data)
    superuser = f"postgresql://postgres:{plan.superuser_password}@{primary.ip}:{plan.pg_port}/"

    def limit(n: int) -> None:
        with psycopg.connect(superuser + "postgres", autocommit=True, connect_timeout=5) as c:
            c.execute(f"ALTER ROLE {BACKUP_ROLE} CONNECTION LIMIT {n}")

    since = max(e["ts"] for e in rc.api("GET", "/api/events?limit=1"))
    limit(0)
    try:
        done = rc.cli("backups", "restore", APP, "--id", dump["id"], "--yes", check=False)
    finally:
        limit(-1)
    # At once, no waiting: the app never stopped serving.
    r = app_get(rc, "/ids")
    assert r.status_code == 200, r.text
    assert r.json() == rows
    assert instances(rc) == running
    assert done.returncode != 0, done.stdout
    said = done.stdout + done.stderr
    assert "too many connections" in said and "was left as it was" in said, said
    events = [e for e in rc.api("GET", "/api/events?limit=50") if e["ts"] > since]
    kinds = [e["kind"] for e in events if e["app"] == APP]
    assert "backup-restore-failed" in kinds and "suspend" not in kinds, events
    (failed,) = [e for e in events if e["kind"] == "backup-restore-failed"]
    assert dump["id"] in failed["message"] and "too many connections" in failed["message"]
    write(rc, 32)
    assert not json.loads(rc.cli("apps", "info", APP, "--json").stdout)["suspended"]


def test_the_apps_writes_survive_losing_the_primarys_servicehost(rc: PairCluster) -> None:
    # The app's one address is its runner's data proxy, for both services.
    db_url = app_get(rc, "/env/DATABASE_URL").text
    assert f"@{DATA_PROXY_HOST}:6432/" in db_url, db_url
    assert f"@{DATA_PROXY_HOST}:" in app_get(rc, "/env/REDIS_URL").text
    try:
        wait_for(lambda: proxy_checked(rc), 30, "the data proxy to have checked every server")
        assert app_get(rc, "/redis/before").text == "before"
    except AssertionError:
        print(proxy_stat(rc), rc.logs_tail(), rc.sentinel_logs())
        raise
    info = rc.cli("services", "info", "postgres", "--app", APP).stdout
    assert "pair-1" in info, info
    # The runner's firewall lets the app reach its listener, and no longer
    # the servicehosts' PostgreSQL itself.
    assert app_get(rc, f"/reach/{DATA_PROXY_HOST}/6432").text == "open"
    for h in rc.servicehosts:
        assert app_get(rc, f"/reach/{h.ip}/5434").text == "ConnectionRefusedError"

    primary = wait_for(rc.primary, 30, "the pair's primary")
    writer = Writer(rc)
    thread = threading.Thread(target=writer.run)
    thread.start()
    try:
        wait_for(lambda: len(writer.acked) >= 100, 60, "the app's writes before the fault")
        wait_for(rc.synchronous, 30, "the standby to be synchronous before the fault")
        # Sentinel fails over only to a replica it has discovered (INFO every
        # 10 s): the Redis pair whole first, as its watch reports it.
        wait_for(lambda: redis_whole(rc), 60, "the app's Redis pair to be whole")
        killed_at = time.monotonic()
        rc.power_off(primary)
        standby = next(h for h in rc.servicehosts if h is not primary)
        try:
            wait_for(
                lambda: any(at > killed_at for _, at in writer.acked),
                RESUME_S + 30,
                "the app's writes to resume",
            )
        except AssertionError:
            print(rc.logs_tail(), rc.pair_logs())
            raise
        n = len(writer.acked)
        wait_for(lambda: len(writer.acked) >= n + 50, 60, "writes after the failover")
    finally:
        writer.stop()
        thread.join(30)
    unavailable = writer.longest_gap(killed_at)
    print(
        f"\npg pair through the platform: {primary.name} powered off; the app could not "
        f"write for {unavailable:.1f} s; {len(writer.acked)} writes acknowledged, "
        f"{writer.failed} failed"
    )
    assert rc.primary() is standby
    assert unavailable < RESUME_S
    stored: Any = app_get(rc, "/ids").json()
    lost = {n for n, _ in writer.acked} - set(stored)
    assert not lost, f"committed but lost: {sorted(lost)[:20]} ({len(lost)})"

    said: list[str] = []

    def redis_answers() -> bool:
        try:
            said.append(app_get(rc, "/redis/after").text)
        except httpx.TransportError as exc:
            said.append(str(exc))
        return said[-1] == "after"

    try:
        wait_for(redis_answers, 60, "the app's Redis through the same address")
    except AssertionError:
        print(said[-3:], rc.logs_tail(), rc.sentinel_logs())
        raise


def test_a_servicehost_restart_keeps_its_pair_member_running(rc: PairCluster) -> None:
    """The servicehost daemon handed over (SIGUSR2, as an upgrade restarts
    it) and started again: the same Patroni and PostgreSQL go on serving
    (adopted, not restarted), and the app writes through the same address."""
    host = next(h for h in rc.servicehosts if not h.partitioned)
    home = host.data / "pgpair"
    patroni_pid = int((home / "patroni.pid").read_text())
    postmaster_pid = int((home / "pgdata" / "postmaster.pid").read_text().split()[0])
    (daemon,) = [p for p in host.procs if p.poll() is None and "servicehost" in p.args]
    daemon.send_signal(signal.SIGUSR2)
    daemon.wait(60)
    rc.start_daemons(host)
    log = rc.base / "logs" / f"{host.name}.log"
    adopted = f"pgpair: adopted the running server (pid {patroni_pid})"
    wait_for(lambda: adopted in log.read_text(errors="replace"), 60, "the member adopted")
    assert int((home / "pgdata" / "postmaster.pid").read_text().split()[0]) == postmaster_pid
    assert Path(f"/proc/{postmaster_pid}").exists()

    said: list[str] = []

    def writes() -> bool:
        r = httpx.post(
            f"{rc.router_url()}/write/1000000", headers={"Host": f"{APP}.localhost"}, timeout=10
        )
        said.append(r.text)
        return said[-1] == "ok 1000000"

    try:
        wait_for(writes, 60, "a write through the app after the restart")
    except AssertionError:
        print(said[-3:], rc.logs_tail(), rc.pair_logs(), rc.sentinel_logs())
        raise
