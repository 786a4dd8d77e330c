"""BackupSourceRequest against a real servicehost: the credentials it hands
backupd work for everything backupd pulls with, and for nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psycopg
import pytest

from roost.servicehost.state import HostState
from tests.servicehost.backupkit import (
    as_app,
    as_backup,
    dump,
    pg_tool,
    provision,
    redis_cli,
    sources,
)
from tests.servicehost.harness import Servicehost

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sh() -> Iterator[Servicehost]:
    yield from Servicehost(backupd=True).running()


async def test_the_source_names_everything_and_its_passwords_are_made_once(
    sh: Servicehost,
) -> None:
    pg = await provision(sh, "src-a", "postgres")
    r = await provision(sh, "src-a", "redis")
    # Two backupds asking at once, the role not made yet: both are answered,
    # with the one role and password.
    src, other = await asyncio.gather(sources(sh), sources(sh))
    assert other.postgres == src.postgres
    assert src.host_id == "servicehost"
    assert src.postgres is not None and src.postgres.user == "roost_backup"
    assert src.postgres.databases["src-a"] == pg.database
    assert src.postgres.password not in (pg.password, r.password)
    [red] = [x for x in src.redis if x.app == "src-a"]
    assert (red.user, red.port, red.host) == ("roost-backup", r.port, r.host)
    # The state.json a fresh servicehost would serve the same credentials from.
    state = msgspec.json.decode(src.state_json, type=HostState)
    assert state.postgres is not None and state.postgres.backup_password == src.postgres.password
    again = await sources(sh)
    assert again.postgres == src.postgres and again.redis == src.redis


async def test_the_backup_role_does_what_barman_and_pg_dump_need(
    sh: Servicehost, tmp_path: Path
) -> None:
    pg = await provision(sh, "src-b", "postgres")
    with as_app(pg) as conn:
        conn.execute("CREATE TABLE t (n int)")
        conn.execute("INSERT INTO t SELECT generate_series(1, 50)")
    src = await sources(sh)
    # Streaming replication (pg_receivewal, pg_basebackup): a slot of its own.
    out = pg_tool(
        src, "psql", "-X", "-At", "-d", "dbname=postgres replication=database",
        "-c", "IDENTIFY_SYSTEM", "-c", "CREATE_REPLICATION_SLOT roost_t PHYSICAL",
        "-c", "DROP_REPLICATION_SLOT roost_t",
    )  # fmt: skip
    assert b"roost_t" in out.stdout
    # What Barman's postgres backup method calls, as a non-superuser.
    with as_backup(src, "postgres") as conn:
        conn.execute("CHECKPOINT")
        conn.execute("SELECT pg_backup_start('roost test', true)")
        conn.execute("SELECT * FROM pg_backup_stop(false)")
        conn.execute("SELECT pg_switch_wal()")
        conn.execute("SELECT pg_create_restore_point('roost test')")
        conn.execute("SELECT name, setting FROM pg_settings WHERE name = 'data_directory'")
    # The nightly logical dump of the app's database.
    d = dump(src, pg.database, tmp_path / "b.dump")
    listing = pg_tool(src, "pg_restore", "--list", str(d)).stdout
    assert b"TABLE DATA public t" in listing


async def test_a_new_apps_database_is_dumpable_at_once(sh: Servicehost, tmp_path: Path) -> None:
    await sources(sh)  # the role exists before this app does
    pg = await provision(sh, "src-c", "postgres")
    dump(sh_src := await sources(sh), pg.database, tmp_path / "c.dump")
    assert sh_src.postgres is not None and sh_src.postgres.databases["src-c"] == pg.database


async def test_the_redis_backup_user_pulls_an_rdb_and_does_nothing_else(
    sh: Servicehost, tmp_path: Path
) -> None:
    r = await provision(sh, "src-r", "redis")
    app = ("default", r.password)
    assert redis_cli(r.host, r.port, *app, "SET", "k", "v").stdout.strip() == "OK"
    src = await sources(sh)
    [red] = [x for x in src.redis if x.app == "src-r"]
    me = (red.user, red.password)
    pulled = redis_cli(red.host, red.port, *me, "--rdb", str(tmp_path / "dump.rdb"))
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "dump.rdb").read_bytes().startswith(b"REDIS")
    for cmd in (["GET", "k"], ["SET", "k", "x"], ["FLUSHALL"], ["CONFIG", "GET", "*"]):
        out = redis_cli(red.host, red.port, *me, *cmd)
        assert "NOPERM" in out.stdout + out.stderr, (cmd, out)
    assert redis_cli(r.host, r.port, *app, "GET", "k").stdout.strip() == "v"
    st = await sh.status()
    [row] = [s for s in st.servers if s.app == "src-r"]
    assert row.kind == "redis" and row.snapshot_problem == ""  # room for its own snapshots
    # Nothing of the pull was written on the servicehost: it went over the socket.
    log = (sh.data / "servicehost" / "logs" / "redis-src-r.log").read_text()
    assert "Starting BGSAVE for SYNC with target: replicas sockets" in log


async def test_the_backup_role_cannot_open_what_it_was_not_given(sh: Servicehost) -> None:
    src = await sources(sh)
    with pytest.raises(psycopg.OperationalError, match=r"permission denied|not permitted"):
        as_backup(src, "template1")
