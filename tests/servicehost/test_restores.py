"""Restores into a real servicehost, as backupd drives them: PostgreSQL (in
place and `--to`), Redis and a data directory; bad input changes nothing;
a repeated request answers as the first did; what was replaced is kept."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from roost.wire.messages import (
    BackupSource,
    DataRestore,
    DataVersion,
    DataVersionReply,
    Ok,
    RedisRestore,
    ServiceCredentials,
    ServiceRestoreReady,
    ServiceRestoreStep,
)
from roost.wire.rpc import RemoteError
from tests.servicehost.backupkit import (
    as_app,
    dump,
    load,
    provision,
    redis_cli,
    sources,
    superuser,
)
from tests.servicehost.harness import Servicehost

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sh() -> Iterator[Servicehost]:
    yield from Servicehost(backupd=True).running()


def databases(sh: Servicehost) -> set[str]:
    with superuser(sh) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


async def seeded(
    sh: Servicehost, app: str, rows: int, tmp: Path
) -> tuple[ServiceCredentials, BackupSource, Path]:
    """An app's database with table t of `rows` rows, and a dump of it."""
    pg = await provision(sh, app, "postgres")
    with as_app(pg) as conn:
        conn.execute("CREATE TABLE t (n int)")
        conn.execute("INSERT INTO t SELECT generate_series(1, %s)", (rows,))
    src = await sources(sh)
    return pg, src, dump(src, pg.database, tmp / f"{app}.dump")


async def step(sh: Servicehost, app: str, rid: str, what: str, target: str = "") -> object:
    msg = ServiceRestoreStep(app=app, restore_id=rid, step=what, target=target)  # type: ignore[arg-type]
    return await sh.as_backupd(msg)


# ---------------------------------------------------------------- PostgreSQL


async def test_a_database_is_restored_in_place_and_the_old_one_kept(
    sh: Servicehost, tmp_path: Path
) -> None:
    pg, src, backup = await seeded(sh, "rs-pg", 10, tmp_path)
    with as_app(pg) as conn:
        conn.execute("INSERT INTO t SELECT generate_series(11, 20)")
        conn.execute("CREATE TABLE later (x int)")

    ready = await step(sh, "rs-pg", "r1", "prepare")
    assert ready == ServiceRestoreReady(database="app_rs_pg__r_r1")
    assert await step(sh, "rs-pg", "r1", "prepare") == ready  # a repeat: the same
    load(src, backup, "app_rs_pg__r_r1")
    swapped = await step(sh, "rs-pg", "r1", "swap")
    assert swapped == ServiceRestoreReady(database=pg.database, kept="app_rs_pg__pre_r1")
    assert await step(sh, "rs-pg", "r1", "swap") == swapped

    with as_app(pg) as conn:  # the same credentials, the restored data
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (10,)
        assert conn.execute("SELECT to_regclass('later')").fetchone() == (None,)
        conn.execute("INSERT INTO t VALUES (99)")  # its own table again
        conn.execute("CREATE TABLE after_restore (x int)")
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 't'").fetchone()
        assert owner == (pg.username,)
    with superuser(sh, "app_rs_pg__pre_r1") as conn:  # the replaced data, kept
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (20,)
    with pytest.raises(psycopg.OperationalError):  # which the app cannot open
        as_app(pg, "app_rs_pg__pre_r1")
    st = await sh.status()
    assert [(k.app, k.kind, k.name) for k in st.kept if k.app == "rs-pg"] == [
        ("rs-pg", "postgres", "app_rs_pg__pre_r1")
    ]


async def test_a_restore_to_a_new_database_leaves_the_apps_alone(
    sh: Servicehost, tmp_path: Path
) -> None:
    pg, src, backup = await seeded(sh, "rs-to", 1, tmp_path)
    with as_app(pg) as conn:
        conn.execute("INSERT INTO t VALUES (2)")
    ready = await step(sh, "rs-to", "c1", "prepare", "rs_to_copy")
    assert isinstance(ready, ServiceRestoreReady)
    load(src, backup, ready.database)
    with pytest.raises(RemoteError, match="prepared for 'rs_to_copy'"):
        await step(sh, "rs-to", "c1", "swap")  # in place it was not
    done = await step(sh, "rs-to", "c1", "swap", "rs_to_copy")
    assert done == ServiceRestoreReady(database="rs_to_copy", kept="")
    with as_app(pg, "rs_to_copy") as conn:  # the app's role opens its copy
        assert conn.execute("SELECT n FROM t").fetchall() == [(1,)]
    with as_app(pg) as conn:
        assert conn.execute("SELECT n FROM t ORDER BY n").fetchall() == [(1,), (2,)]


@pytest.mark.parametrize(
    ("rid", "target", "why"),
    [
        ("BAD!", "", "restore id"),
        ("x" * 17, "", "restore id"),
        ("b1", "app_rs_bad", "an app's"),
        ("b2", "postgres", "reserved"),
        ("b3", "Robert'); DROP", "not valid"),
        ("b4", "roost", "a role's name"),
        ("b5", "roost_backup", "a role's name"),
    ],
)
async def test_bad_names_are_refused_and_nothing_changes(
    sh: Servicehost, rid: str, target: str, why: str
) -> None:
    await provision(sh, "rs-bad", "postgres")
    await sources(sh)  # the backup role exists (whatever ran before on this servicehost)
    before = databases(sh)
    with pytest.raises(RemoteError, match=why):
        await step(sh, "rs-bad", rid, "prepare", target)
    assert databases(sh) == before


async def test_a_target_that_exists_is_refused(sh: Servicehost) -> None:
    await provision(sh, "rs-ex", "postgres")
    with superuser(sh) as conn:
        conn.execute("CREATE DATABASE someones")
    before = databases(sh)
    with pytest.raises(RemoteError, match="exists already"):
        await step(sh, "rs-ex", "e1", "prepare", "someones")
    assert databases(sh) == before


async def test_a_discarded_restore_leaves_nothing_and_cannot_be_swapped(sh: Servicehost) -> None:
    await provision(sh, "rs-dc", "postgres")
    ready = await step(sh, "rs-dc", "d1", "prepare")
    assert isinstance(ready, ServiceRestoreReady) and ready.database in databases(sh)
    assert await step(sh, "rs-dc", "d1", "discard") == ServiceRestoreReady(database="")
    assert ready.database not in databases(sh)
    with pytest.raises(RemoteError, match="discarded"):
        await step(sh, "rs-dc", "d1", "swap")
    with pytest.raises(RemoteError, match="was not prepared"):
        await step(sh, "rs-dc", "never", "swap")


# ---------------------------------------------------------------- Redis


async def test_redis_is_restored_from_an_rdb_and_keeps_it_across_a_restart(
    sh: Servicehost, tmp_path: Path
) -> None:
    r = await provision(sh, "rs-redis", "redis")
    app = (r.host, r.port, "default", r.password)
    redis_cli(*app, "SET", "a", "1")
    src = await sources(sh)
    [red] = [x for x in src.redis if x.app == "rs-redis"]
    pulled = redis_cli(red.host, red.port, red.user, red.password, "--rdb", str(tmp_path / "a.rdb"))
    assert pulled.returncode == 0, pulled.stderr
    rdb = (tmp_path / "a.rdb").read_bytes()
    redis_cli(*app, "SET", "a", "2")
    redis_cli(*app, "SET", "b", "later")

    with pytest.raises(RemoteError, match="damaged"):
        await sh.as_backupd(RedisRestore(app="rs-redis", restore_id="bad", rdb=rdb[:-12]))
    assert redis_cli(*app, "GET", "a").stdout.strip() == "2"  # untouched

    done = await sh.as_backupd(RedisRestore(app="rs-redis", restore_id="r1", rdb=rdb))
    assert isinstance(done, Ok) and done.detail.endswith("kept/rs-redis/redis-r1")
    assert redis_cli(*app, "GET", "a").stdout.strip() == "1"
    assert redis_cli(*app, "EXISTS", "b").stdout.strip() == "0"
    kept = Path(done.detail)
    assert (kept / "appendonlydir").is_dir() and (kept / "dump.rdb").is_file()
    directory = sh.data / "servicehost" / "redis" / "rs-redis"
    assert (directory / "appendonlydir").is_dir()  # the AOF, rebuilt from the RDB
    assert "appendonly yes" in (directory / "redis.conf").read_text()
    redis_cli(*app, "SET", "c", "after")
    again = await sh.as_backupd(RedisRestore(app="rs-redis", restore_id="r1", rdb=rdb))
    assert again == done and redis_cli(*app, "GET", "c").stdout.strip() == "after"

    assert await asyncio.to_thread(sh.stop) == 0
    sh.start()
    await sh.wait_postgres_up()
    await provision(sh, "rs-redis", "redis")  # (waits until it is up)
    assert redis_cli(*app, "MGET", "a", "c").stdout.split() == ["1", "after"]
    st = await sh.status()
    assert ("rs-redis", "redis") in {(k.app, k.kind) for k in st.kept}


# ---------------------------------------------------------------- data directories


def _archive(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


async def _version(sh: Servicehost, app: str) -> int:
    reply = await sh.as_backupd(DataVersion(app=app))
    assert isinstance(reply, DataVersionReply)
    return reply.version


async def test_a_data_directory_is_restored_beside_and_swapped(sh: Servicehost) -> None:
    live = sh.data / "servicehost" / "appdata" / "rs-data"
    live.mkdir(mode=0o700)
    (live / "old.txt").write_text("before")
    before = await _version(sh, "rs-data")
    archive = _archive({"new.txt": b"restored", "sub/deep.txt": b"x"}, {"link": "new.txt"})
    done = await sh.as_backupd(DataRestore(app="rs-data", restore_id="d1", archive=archive))
    assert isinstance(done, Ok)
    assert (live / "new.txt").read_bytes() == b"restored" and not (live / "old.txt").exists()
    assert (live / "link").is_symlink() and os.readlink(live / "link") == "new.txt"
    assert (Path(done.detail) / "old.txt").read_text() == "before"
    assert await _version(sh, "rs-data") > before  # runners pull it
    st = os.stat(live)
    assert (st.st_mode & 0o777) == 0o700 and st.st_uid == os.stat(live / "new.txt").st_uid
    if os.geteuid() == 0:  # the tools' user owns what it serves
        assert st.st_uid != 0
    assert await sh.as_backupd(DataRestore(app="rs-data", restore_id="d1", archive=b"")) == done
