"""Attacks on what backupd pulls from and restores into, against a real
servicehost daemon (real PostgreSQL and Redis, over the wire with real keys):

- a runner's key (a host that runs tenants' code) asks for the backup
  credentials, or to overwrite an app's data with a restore;
- the backup role, whose password sits on the backup host (and which reads
  past row-level security), tries to write to an app's database: directly,
  as the app's role, by dropping it, by taking the app's password, or by
  leaving itself a grant in a database it restored;
- an app's own Redis user tries to pull a full copy (SYNC), as backupd does;
- a data archive tries to write outside the app's directory.
Each must be refused, with nothing changed.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from roost.wire.messages import (
    BackupSourceRequest,
    DataRestore,
    DataVersion,
    DataVersionReply,
    Msg,
    RedisRestore,
    ServiceRestoreReady,
    ServiceRestoreStep,
)
from roost.wire.rpc import RemoteError
from tests.servicehost.backupkit import as_app, as_backup, provision, redis_cli, sources
from tests.servicehost.harness import Servicehost

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sh() -> Iterator[Servicehost]:
    host = Servicehost(backupd=True)
    host.member("runner")  # a member of the cluster before the daemon reads peers.json
    yield from host.running()


async def test_only_backupd_may_ask_for_the_sources_or_restore(sh: Servicehost) -> None:
    r = await provision(sh, "victim", "redis")
    redis_cli(r.host, r.port, "default", r.password, "SET", "k", "precious")
    live = sh.data / "servicehost" / "appdata" / "victim"
    live.mkdir(mode=0o700, exist_ok=True)
    (live / "f").write_text("precious")
    attacks: list[Msg] = [
        BackupSourceRequest(),
        RedisRestore(app="victim", restore_id="x1", rdb=b"REDIS0010"),
        DataRestore(app="victim", restore_id="x1", archive=b""),
        ServiceRestoreStep(app="victim", restore_id="x1", step="prepare"),
    ]
    for keys, who in ((sh.member("runner"), r"a runner \(runner:local\)"),
                      (sh.client_keys, r"a controller \(controller:local\)")):  # fmt: skip
        async with sh.client(keys) as client:
            for msg in attacks:
                with pytest.raises(RemoteError, match=f"{who} may not send"):
                    await client.call(msg, timeout=30, tries=1)
    assert redis_cli(r.host, r.port, "default", r.password, "GET", "k").stdout.strip() == "precious"
    assert (live / "f").read_text() == "precious"
    assert not (sh.data / "servicehost" / "kept").exists() or not any(
        (sh.data / "servicehost" / "kept").iterdir()
    )
    assert "refused: a runner" in sh.tail(300)


async def test_the_backup_role_cannot_write_to_an_apps_database(sh: Servicehost) -> None:
    pg = await provision(sh, "ledger", "postgres")
    with as_app(pg) as conn:
        conn.execute("CREATE TABLE money (n int)")
        conn.execute("INSERT INTO money VALUES (100)")
        # Row-level security with no policy: only the backup role's BYPASSRLS reads it.
        conn.execute("ALTER TABLE money ENABLE ROW LEVEL SECURITY")
    src = await sources(sh)
    with as_backup(src, pg.database) as conn:
        assert conn.execute("SELECT n FROM money").fetchall() == [(100,)]  # it reads
        for attack in (
            "INSERT INTO money VALUES (1)",
            "UPDATE money SET n = 0",
            "DELETE FROM money",
            "TRUNCATE money",
            "CREATE TABLE planted (x int)",
            f"SET ROLE {pg.username}",
            f"ALTER ROLE {pg.username} PASSWORD 'stolen'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(attack)
    with as_backup(src, "postgres") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"DROP DATABASE {pg.database}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"GRANT {pg.username} TO roost_backup")
    with as_app(pg) as conn:  # untouched, and the app's password still works
        assert conn.execute("SELECT n FROM money").fetchall() == [(100,)]


async def test_a_restored_database_keeps_no_grant_the_backup_role_left_itself(
    sh: Servicehost,
) -> None:
    pg = await provision(sh, "planted", "postgres")
    src = await sources(sh)
    ready = await sh.as_backupd(ServiceRestoreStep(app="planted", restore_id="p1", step="prepare"))
    assert isinstance(ready, ServiceRestoreReady)
    with as_backup(src, ready.database) as conn:  # the one database it may write
        conn.execute("CREATE TABLE money (n int)")
        conn.execute("INSERT INTO money VALUES (100)")
        conn.execute("CREATE SCHEMA side")
        conn.execute("CREATE TABLE side.more (n int)")
        conn.execute("GRANT ALL ON money, side.more TO PUBLIC")
        conn.execute("GRANT ALL ON SCHEMA public, side TO PUBLIC")
    await sh.as_backupd(ServiceRestoreStep(app="planted", restore_id="p1", step="swap"))
    with as_backup(src, pg.database) as conn:
        assert conn.execute("SELECT n FROM money").fetchall() == [(100,)]
        for attack in (
            "INSERT INTO money VALUES (1)",
            "INSERT INTO side.more VALUES (1)",
            "CREATE TABLE public.again (x int)",
            "DROP TABLE money",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(attack)
    with as_app(pg) as conn:  # all of it is the app's now
        conn.execute("INSERT INTO money VALUES (1)")
        conn.execute("INSERT INTO side.more VALUES (1)")
        owners = conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('public', 'side')"
        ).fetchall()
        assert owners == [(pg.username,)]


async def test_an_apps_own_redis_user_cannot_pull_a_copy(sh: Servicehost, tmp_path: Path) -> None:
    r = await provision(sh, "nosync", "redis")
    pulled = redis_cli(r.host, r.port, "default", r.password, "--rdb", str(tmp_path / "x.rdb"))
    assert pulled.returncode != 0 and "NOPERM" in pulled.stdout + pulled.stderr
    assert not (tmp_path / "x.rdb").exists() or (tmp_path / "x.rdb").stat().st_size == 0
    out = redis_cli(r.host, r.port, "default", r.password, "SYNC")
    assert "NOPERM" in out.stdout + out.stderr


def _tar(*members: tarfile.TarInfo) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(b"owned\n") if m.isreg() else None)
    return buf.getvalue()


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(b"owned\n")
    return info


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


@pytest.mark.parametrize(
    "members",
    [
        [_file("../escaped")],
        [_file("../../escaped")],
        [_file("/tmp/roost-escaped")],
        [_symlink("out", "../../.."), _file("out/escaped")],
        [_symlink("etc", "/etc")],
        [_symlink("ok", "."), _file("ok/../../escaped")],
    ],
    ids=["dotdot", "dotdot2", "absolute", "through-symlink", "symlink-absolute", "symlink-dotdot"],
)
async def test_a_data_archive_cannot_write_outside_the_apps_directory(
    sh: Servicehost, members: list[tarfile.TarInfo]
) -> None:
    appdata = sh.data / "servicehost" / "appdata"
    live = appdata / "target"
    live.mkdir(mode=0o700, exist_ok=True)
    (live / "f").write_text("precious")
    version = await sh.as_backupd(DataVersion(app="target"))
    assert isinstance(version, DataVersionReply)
    before = sorted(os.listdir(appdata))
    with pytest.raises(RemoteError, match="refused"):
        await sh.as_backupd(DataRestore(app="target", restore_id="e1", archive=_tar(*members)))
    assert sorted(os.listdir(appdata)) == before  # no staging left, nothing beside
    assert os.listdir(live) == ["f"] and (live / "f").read_text() == "precious"
    assert await sh.as_backupd(DataVersion(app="target")) == version
    for where in (sh.data / "servicehost", sh.data, Path("/tmp/roost-escaped")):
        assert not (where / "escaped").exists() and not Path("/tmp/roost-escaped").exists()
