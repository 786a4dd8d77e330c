"""PostgreSQL and Redis outlive the servicehost daemon (issue 20): killed
(SIGKILL) or handing over (SIGUSR2), the daemon leaves them serving, with
their clients' connections; the next daemon adopts them (same pids) and
manages them as before; a record naming a process that merely reuses a
server's pid is never adopted; a full stop stops them all."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from roost.wire.messages import ServiceCredentials, ServiceHostStatus
from tests.conftest import free_port
from tests.servicehost.backupkit import as_app, dump, redis_cli, sources
from tests.servicehost.backupkit import provision as creds
from tests.servicehost.harness import Servicehost

pytestmark = pytest.mark.e2e


@pytest.fixture
def sh() -> Iterator[Servicehost]:
    yield from Servicehost(backupd=True).running()


def pids(st: ServiceHostStatus) -> dict[str, int]:
    """kind/app -> pid of each server the status names ("postgres/" the cluster)."""
    return {f"{s.kind}/{s.app}": s.pid for s in st.servers if s.kind == "redis" or not s.app}


async def wait_all_up(sh: Servicehost, n: int) -> ServiceHostStatus:
    """The status once PostgreSQL and `n` Redis servers are up."""
    await sh.wait_postgres_up()
    for _ in range(600):
        st = await sh.status()
        redis_up = [s for s in st.servers if s.kind == "redis" and s.state == "up" and s.pid]
        if len(redis_up) == n:
            return st
        await asyncio.sleep(0.1)
    raise AssertionError(f"not every Redis came up: {st.servers}\n{sh.tail()}")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def redis_for(c: ServiceCredentials) -> redis.Redis:
    # One connection, kept: the test checks that this very connection survives.
    return redis.Redis.from_url(c.url, socket_timeout=5, single_connection_client=True)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGUSR2], ids=["kill-9", "hand-over"])
async def test_servers_outlive_the_daemon_and_the_next_one_adopts_them(
    sh: Servicehost, sig: signal.Signals, tmp_path: Path
) -> None:
    pg = await creds(sh, "keep", "postgres")
    rc = await creds(sh, "keep", "redis")
    before = pids(await wait_all_up(sh, 1))
    conn = as_app(pg)
    conn.execute("CREATE TABLE t (v int)")
    conn.execute("INSERT INTO t VALUES (1)")
    backend = conn.execute("SELECT pg_backend_pid()").fetchone()
    r = redis_for(rc)
    r.set("k", "before")
    client = r.client_id()

    status = await asyncio.to_thread(sh.end, sig)
    assert status == (0 if sig == signal.SIGUSR2 else -signal.SIGKILL), sh.tail()
    # No daemon now: the servers serve, on the connections made before.
    assert all(alive(pid) for pid in before.values())
    conn.execute("INSERT INTO t VALUES (2)")
    r.set("k", "between")

    sh.start()
    after = pids(await wait_all_up(sh, 1))
    assert after == before, sh.tail()  # adopted, not restarted
    assert "adopted the running server" in sh.tail(200)
    assert conn.execute("SELECT pg_backend_pid()").fetchone() == backend
    assert conn.execute("SELECT sum(v) FROM t").fetchone() == (3,)
    assert r.client_id() == client and r.get("k") == b"between"

    # Managed as before: provisioning, the credentials kept, backups pulled.
    assert await creds(sh, "keep", "postgres") == pg
    fresh = await creds(sh, "fresh", "postgres")
    with as_app(fresh) as c:
        assert c.execute("SELECT current_database()").fetchone() == (fresh.database,)
    fresh_redis = await creds(sh, "fresh", "redis")
    with redis_for(fresh_redis) as fr:
        assert fr.ping()
    src = await sources(sh)
    assert dump(src, pg.database, tmp_path / "keep.dump").stat().st_size > 0
    keep = next(s for s in src.redis if s.app == "keep")
    pulled = redis_cli(keep.host, keep.port, keep.user, keep.password, "--rdb", str(tmp_path / "r"))
    assert pulled.returncode == 0 and (tmp_path / "r").stat().st_size > 0, pulled.stderr

    # An adopted server that dies later is started again.
    os.kill(before["redis/keep"], signal.SIGKILL)
    for _ in range(300):
        now = pids(await sh.status())
        if now["redis/keep"] not in (0, before["redis/keep"]):
            break
        await asyncio.sleep(0.1)
    assert now["redis/keep"] not in (0, before["redis/keep"])
    r.close()
    conn.close()

    # A full stop stops every server, adopted or not.
    servers = sh.servers()
    assert await asyncio.to_thread(sh.stop) == 0
    assert not any(alive(pid) for pid in servers | set(now.values()))


async def test_a_record_naming_another_process_is_not_adopted(sh: Servicehost) -> None:
    pg = await creds(sh, "reuse", "postgres")
    rc = await creds(sh, "reuse", "redis")
    with as_app(pg) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("INSERT INTO t VALUES (7)")
    before = pids(await wait_all_up(sh, 1))
    # The daemon dies, then its servers while it is away.
    assert await asyncio.to_thread(sh.end, signal.SIGKILL) == -signal.SIGKILL
    for pid in before.values():
        os.kill(pid, signal.SIGKILL)
    for _ in range(300):  # (PostgreSQL's backends end once they see the postmaster gone)
        if not sh.servers():
            break
        await asyncio.sleep(0.1)
    assert not sh.servers()

    # Their pids taken by unrelated processes, even in their directories.
    pgdata = sh.data / "servicehost" / "postgres"
    rdir = sh.data / "servicehost" / "redis" / "reuse"
    impostors = [subprocess.Popen(["sleep", "600"], cwd=d) for d in (pgdata, rdir)]
    try:
        record = (pgdata / "postmaster.pid").read_text().split("\n")
        record[0] = str(impostors[0].pid)
        (pgdata / "postmaster.pid").write_text("\n".join(record))
        (rdir / "redis.pid").write_text(f"{impostors[1].pid}\n")

        sh.start()
        after = pids(await wait_all_up(sh, 1))
        started = {after["postgres/"], after["redis/reuse"]}
        assert not started & {p.pid for p in impostors} and not started & set(before.values())
        assert all(p.poll() is None for p in impostors)  # never signalled
        with as_app(pg) as conn:
            assert conn.execute("SELECT v FROM t").fetchone() == (7,)
        with redis_for(rc) as r:
            assert r.ping()
        # A full stop stops what it started, and only that.
        assert await asyncio.to_thread(sh.end, signal.SIGTERM) == 0
        assert not any(alive(pid) for pid in started)
        assert all(p.poll() is None for p in impostors)
    finally:
        for p in impostors:
            p.kill()
            p.wait()


def test_the_servers_are_not_the_daemons_children(sh: Servicehost) -> None:
    assert sh.proc is not None
    kids = {k.pid for k in psutil.Process(sh.proc.pid).children(recursive=True)}
    servers = sh.servers()
    assert servers and not servers & kids
    # Each in a session of its own: no signal to the daemon's group reaches them.
    assert all(os.getsid(pid) != os.getsid(sh.proc.pid) for pid in servers)


async def test_a_server_left_with_other_settings_is_restarted_with_this_daemons(
    sh: Servicehost,
) -> None:
    pg = await creds(sh, "moved", "postgres")
    with as_app(pg) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("INSERT INTO t VALUES (5)")
    old = pids(await wait_all_up(sh, 0))["postgres/"]
    assert await asyncio.to_thread(sh.end, signal.SIGUSR2) == 0
    port = free_port()
    sh.env["ROOST_POSTGRES_PORT"] = str(port)  # the next daemon means another port
    sh.start()
    new = await sh.wait_postgres_up(not_pid=old)
    assert not alive(old) and "other settings: restarting it" in sh.tail(200)
    moved = await creds(sh, "moved", "postgres")
    assert moved.port == port and moved.password == pg.password
    with as_app(moved) as conn:
        assert conn.execute("SELECT v FROM t").fetchone() == (5,)
    assert pids(await sh.status())["postgres/"] == new
