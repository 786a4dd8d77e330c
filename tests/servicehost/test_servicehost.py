"""The servicehost with real PostgreSQL and Redis servers, over its RPC endpoint.

One daemon (a subprocess, started by `run()`) serves the whole module; each
test uses its own app names so the tests do not depend on one another.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psutil
import psycopg
import pytest
import redis

from roost.servicehost.binaries import find_binaries
from roost.wire.messages import (
    ServiceBackup,
    ServiceBackupDone,
    ServiceCredentials,
    ServiceDeprovision,
    ServiceHostStatus,
    ServiceProvision,
    ServiceRemoved,
)
from roost.wire.rpc import RemoteError
from tests.conftest import free_port, wait_until
from tests.servicehost.backupkit import as_app as pg_connect
from tests.servicehost.backupkit import provision as creds
from tests.servicehost.backupkit import superuser
from tests.servicehost.harness import NO_RETRY, Servicehost, redis_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sh() -> Iterator[Servicehost]:
    host = Servicehost(controller=True)
    yield from host.running()


async def test_postgres_isolation_between_apps(sh: Servicehost) -> None:
    a = await creds(sh, "iso-a", "postgres")
    b = await creds(sh, "iso-b", "postgres")
    assert (a.database, a.username) == ("app_iso_a", "app_iso_a")
    assert a.url.startswith("postgres://app_iso_a:") and a.password != b.password
    # Idempotent: asking again gives the same credentials.
    assert await creds(sh, "iso-a", "postgres") == a
    with pg_connect(a) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("INSERT INTO t VALUES ('from a')")
        assert conn.execute("SELECT current_user").fetchone() == ("app_iso_a",)
    # A's credentials open neither B's database nor the maintenance database.
    for db in (b.database, "postgres", "template1"):
        with pytest.raises(psycopg.OperationalError) as err:
            pg_connect(a, dbname=db)
        assert "no pg_hba.conf entry" in str(err.value) or "permission denied" in str(err.value)
    # Nor does A's password open B's role.
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        pg_connect(_with(b, a.password))
    # The second fence, checked on its own: the database refuses A even if
    # pg_hba let it through.
    with superuser(sh) as su:
        row = su.execute(
            "SELECT has_database_privilege('app_iso_a', 'app_iso_b', 'CONNECT'),"
            " has_database_privilege('app_iso_b', 'app_iso_b', 'CONNECT'),"
            " has_database_privilege('app_iso_a', 'postgres', 'CONNECT')"
        ).fetchone()
        assert row == (False, True, False)
        flags = su.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname='app_iso_a'"
        ).fetchone()
        assert flags == (False, False, False)
    # B's own database does not show A's table.
    with pg_connect(b) as conn:
        assert conn.execute("SELECT to_regclass('public.t')").fetchone() == (None,)


def _with(c: ServiceCredentials, password: str) -> ServiceCredentials:
    return msgspec.structs.replace(c, password=password)


async def test_servers_run_as_unprivileged_user(sh: Servicehost) -> None:
    st = await sh.status()
    cluster = next(s for s in st.servers if s.app == "" and s.kind == "postgres")
    owner = psutil.Process(cluster.pid).username()
    if os.geteuid() == 0:
        assert owner == "roost-services"
    else:
        assert owner == psutil.Process().username()


async def test_redis_isolation_and_limits(sh: Servicehost) -> None:
    a = await creds(sh, "rediso-a", "redis")
    b = await creds(sh, "rediso-b", "redis")
    assert a.port != b.port and a.url.startswith("redis://:")
    assert await creds(sh, "rediso-a", "redis") == a
    ra, rb = redis_for(a), redis_for(b)
    ra.set("k", "a")
    rb.set("k", "b")
    assert ra.get("k") == b"a" and rb.get("k") == b"b"
    # A's password does not open B's server.
    stranger = redis.Redis(
        host=b.host, port=b.port, password=a.password, socket_timeout=5, retry=NO_RETRY
    )
    with pytest.raises(redis.AuthenticationError):
        stranger.get("k")
    no_password = redis.Redis(host=b.host, port=b.port, socket_timeout=5, retry=NO_RETRY)
    with pytest.raises(redis.AuthenticationError):
        no_password.get("k")
    # The app cannot lift its own memory limit or stop its server.
    with pytest.raises(redis.ResponseError, match="no permissions"):
        ra.config_set("maxmemory", "0")
    with pytest.raises(redis.ResponseError, match="no permissions"):
        ra.execute_command("SHUTDOWN")
    assert ra.config_get("maxmemory") == {"maxmemory": str(16 * 2**20)}
    for r in (ra, rb, stranger, no_password):
        r.close()


async def test_redis_evicts_only_keys_with_a_ttl_at_its_memory_limit(sh: Servicehost) -> None:
    """volatile-lru (redis.py says why): a full Redis drops cache entries (keys
    with a TTL), least recently used first, and never a key its app did not
    say may vanish: a queue or stored data is refused more room, not dropped."""
    # 2 MB, not 1: an idle Redis 7 already uses ~1 MB, so at 1 MB every key
    # would be evicted at once and the test could not tell LRU from emptiness.
    c = await creds(sh, "tiny", "redis", memory_mb=2)
    r = redis_for(c)
    r.rpush("queue", *(f"job-{i}" for i in range(100)))  # no TTL: Celery's lists
    value = "x" * 1000
    for i in range(5000):  # ~5 MB of cache into a 2 MB server: must evict, not fail
        r.set(f"cache:{i}", value, ex=3600)
    mem = r.info("memory")
    assert mem["maxmemory"] == 2 * 2**20
    assert mem["maxmemory_policy"] == "volatile-lru"
    assert mem["used_memory"] - mem.get("mem_not_counted_for_evict", 0) <= 1.05 * 2 * 2**20
    assert r.info("stats")["evicted_keys"] > 0
    # Redis's LRU is approximate (it samples a few keys per eviction): any one
    # key may go or stay by chance, so judge groups. The oldest must be mostly
    # gone, the newest mostly kept.
    oldest = r.exists(*(f"cache:{i}" for i in range(500)))
    newest = r.exists(*(f"cache:{i}" for i in range(4900, 5000)))
    assert oldest < 100 and newest > 50, (oldest, newest)
    assert r.llen("queue") == 100  # nothing of it evicted
    # Data without a TTL: once no cache entry is left to evict, writes are
    # refused (the app sees OOM) rather than earlier data dropped.
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for i in range(5000):
            r.set(f"data:{i}", value)
    assert r.exists("data:0") and r.llen("queue") == 100
    assert r.dbsize() - r.exists(*(f"cache:{i}" for i in range(5000))) > 100
    # Raising the limit is the servicehost's job (a repeated provision).
    assert await creds(sh, "tiny", "redis", memory_mb=4) == c
    assert r.config_get("maxmemory") == {"maxmemory": str(4 * 2**20)}
    r.set("fresh", "value")  # room again
    assert r.get("fresh") == b"value"
    r.close()


async def test_killed_postgres_is_restarted(sh: Servicehost) -> None:
    a = await creds(sh, "crash-a", "postgres")
    with pg_connect(a) as conn:
        conn.execute("CREATE TABLE survives (v int)")
        conn.execute("INSERT INTO survives VALUES (42)")
    st = await sh.status()
    old = next(s for s in st.servers if s.app == "" and s.kind == "postgres")
    os.kill(old.pid, signal.SIGKILL)
    new_pid = await sh.wait_postgres_up(not_pid=old.pid)
    assert new_pid != old.pid
    st = await sh.status()
    cluster = next(s for s in st.servers if s.app == "" and s.kind == "postgres")
    assert cluster.restarts >= 1 and cluster.last_error.startswith("exited")
    with pg_connect(a) as conn:
        assert conn.execute("SELECT v FROM survives").fetchone() == (42,)
    # Provisioning works on the restarted server.
    b = await creds(sh, "crash-b", "postgres")
    with pg_connect(b) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


async def test_killed_redis_is_restarted_with_its_data(sh: Servicehost) -> None:
    c = await creds(sh, "crash-r", "redis")
    r = redis_for(c)
    r.set("kept", "yes")
    r.close()
    st = await sh.status()
    old = next(s for s in st.servers if s.app == "crash-r")
    os.kill(old.pid, signal.SIGKILL)

    async def restarted() -> bool:
        st = await sh.status()
        s = next(s for s in st.servers if s.app == "crash-r")
        return s.state == "up" and s.pid not in (0, old.pid)

    for _ in range(300):
        if await restarted():
            break
        await asyncio.sleep(0.1)
    r = redis_for(c)
    assert r.get("kept") == b"yes"  # appendonly: the write survived the crash
    r.close()


async def test_deprovision_postgres_leaves_a_restorable_backup(sh: Servicehost) -> None:
    c = await creds(sh, "gone-pg", "postgres")
    with pg_connect(c) as conn:
        conn.execute("CREATE TABLE notes (body text)")
        conn.execute("INSERT INTO notes VALUES ('remember me')")
    reply = await sh.call(ServiceDeprovision(app="gone-pg", kind="postgres"))
    assert isinstance(reply, ServiceRemoved) and reply.backup_path
    dump = Path(reply.backup_path)
    assert dump.parent == sh.data / "servicehost" / "backups" / "gone-pg"
    assert dump.name.startswith("postgres-") and dump.suffix == ".dump"
    assert dump.read_bytes()[:5] == b"PGDMP"
    # The data is gone, and so is the role.
    with pytest.raises(psycopg.OperationalError):
        pg_connect(c)
    with superuser(sh) as su:
        assert su.execute("SELECT 1 FROM pg_roles WHERE rolname='app_gone_pg'").fetchone() is None
        assert (
            su.execute("SELECT 1 FROM pg_database WHERE datname='app_gone_pg'").fetchone() is None
        )
        su.execute("CREATE DATABASE scratch_restore")
    # Asking again is harmless and names the same backup.
    again = await sh.call(ServiceDeprovision(app="gone-pg", kind="postgres"))
    assert again == reply
    # Restore into a scratch database on the same server: the row is there.
    pg = find_binaries()
    state_env = _superuser_env(sh)
    out = subprocess.run(
        [pg.pg("pg_restore"), "--no-owner", "--no-acl", "--dbname", "scratch_restore", str(dump)],
        env={**os.environ, **state_env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    with superuser(sh, "scratch_restore") as su:
        assert su.execute("SELECT body FROM notes").fetchall() == [("remember me",)]


def _superuser_env(sh: Servicehost) -> dict[str, str]:
    import json

    pg = json.loads((sh.data / "servicehost" / "state.json").read_text())["postgres"]
    return {
        "PGHOST": "127.0.0.1", "PGPORT": str(pg["port"]), "PGUSER": pg["superuser"],
        "PGPASSWORD": pg["password"],
    }  # fmt: skip


async def test_deprovision_redis_leaves_a_restorable_backup(
    sh: Servicehost, tmp_path: Path
) -> None:
    c = await creds(sh, "gone-r", "redis")
    r = redis_for(c)
    r.set("last", "words")
    r.close()
    on_demand = await sh.call(ServiceBackup(app="gone-r", kind="redis"))
    assert isinstance(on_demand, ServiceBackupDone) and on_demand.size > 0
    reply = await sh.call(ServiceDeprovision(app="gone-r", kind="redis"))
    assert isinstance(reply, ServiceRemoved) and reply.backup_path.endswith(".rdb")
    rdb = Path(reply.backup_path)
    assert rdb != Path(on_demand.path) and rdb.read_bytes()[:5] == b"REDIS"
    assert not (sh.data / "servicehost" / "redis" / "gone-r").exists()
    with pytest.raises(redis.ConnectionError):
        redis_for(c).ping()
    st = await sh.status()
    assert all(s.app != "gone-r" for s in st.servers)
    # Restore: a scratch redis-server loading the backup has the key.
    scratch = tmp_path
    (scratch / "dump.rdb").write_bytes(rdb.read_bytes())
    port = free_port()
    proc = subprocess.Popen(
        [str(find_binaries().redis_server), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(scratch), "--appendonly", "no", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        restored = redis.Redis(port=port, socket_timeout=5)
        wait_until(lambda: restored.ping(), 20, "scratch redis")
        assert restored.get("last") == b"words"
        restored.close()
    finally:
        proc.terminate()
        proc.wait(10)


async def test_unknown_service_and_bad_names_are_refused(sh: Servicehost) -> None:
    with pytest.raises(RemoteError, match="not valid"):
        await sh.call(ServiceProvision(app="Bad Name", kind="postgres"))
    with pytest.raises(RemoteError, match="has no redis service"):
        await sh.call(ServiceBackup(app="nobody", kind="redis"))
    reply = await sh.call(ServiceDeprovision(app="nobody", kind="redis"))
    assert reply == ServiceRemoved(app="nobody", kind="redis", backup_path="")


FAKE_CONTROLLER = """
import asyncio, sys
from pathlib import Path
import msgspec
from roost.wire.keys import load_keypair
from roost.wire.messages import Ok, ServiceHostStatus
from roost.wire.node import Node
from roost.wire.rpc import RpcServer

data, address, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

async def handler(msg):
    if isinstance(msg, ServiceHostStatus):
        with open(out, "ab") as fh:
            fh.write(msgspec.json.encode(msg) + b"\\n")
    return Ok()

async def main():
    keys = data / "keys"
    allowed = [load_keypair(keys, "servicehost").public]
    async with Node(load_keypair(keys, "controller"), allowed) as n:
        await RpcServer(n, address, handler).serve()

asyncio.run(main())
"""


async def test_status_is_pushed_to_the_controllers(sh: Servicehost) -> None:
    # The controller here is a separate process: it stands in for the lead's
    # controller, which has not learnt ServiceHostStatus yet.
    await creds(sh, "pushed", "redis")
    out = sh.data / "pushed.jsonl"
    address = sh.cluster.of("controller")[0].address
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE_CONTROLLER, str(sh.data), address, str(out)]
    )
    # The first push to arrive may have been collected before "pushed" was
    # provisioned (a push sent while no controller listened waits in the
    # socket until one does): judge the first that knows of it.
    pushes: list[ServiceHostStatus] = []
    try:
        for _ in range(300):  # pushes every 5 s (and retries a silent controller)
            lines = out.read_bytes().splitlines() if out.exists() else []
            pushes = [msgspec.json.decode(ln, type=ServiceHostStatus) for ln in lines]
            if any(s.app == "pushed" for st in pushes for s in st.servers):
                break
            await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
    assert pushes, "no status push within 30 s"
    st = next(st for st in pushes if any(s.app == "pushed" for s in st.servers))
    assert st.host == "servicehost" and st.disk_total_bytes > st.disk_free_bytes > 0
    pushed = next(s for s in st.servers if s.app == "pushed")
    assert pushed.kind == "redis" and pushed.state == "up" and pushed.disk_bytes > 0
    cluster = next(s for s in st.servers if s.app == "" and s.kind == "postgres")
    assert cluster.state == "up" and cluster.pid > 0 and cluster.disk_bytes > 0


async def test_restart_brings_every_server_back(sh: Servicehost) -> None:
    pg = await creds(sh, "reboot", "postgres")
    rc = await creds(sh, "reboot", "redis")
    with pg_connect(pg) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("INSERT INTO t VALUES (7)")
    r = redis_for(rc)
    r.set("k", "v")
    r.close()
    assert await asyncio.to_thread(sh.stop) == 0
    sh.start()
    await sh.wait_postgres_up()
    assert await creds(sh, "reboot", "postgres") == pg
    assert await creds(sh, "reboot", "redis") == rc
    with pg_connect(pg) as conn:
        assert conn.execute("SELECT v FROM t").fetchone() == (7,)
    r = redis_for(rc)
    assert r.get("k") == b"v"
    r.close()
