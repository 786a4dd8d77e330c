"""Scratch servers for drills and restores: a PostgreSQL and a redis-server
that live for one `async with` block and leave nothing behind.

Theory of operation. A scratch server runs as the system user `roost-backup`
(PostgreSQL refuses root, and a copy of someone's data has no business
being served by root), on a free loopback port, with its files in a fresh
directory under DATA/backupd/scratch/. The user must walk down to that
directory: DATA, DATA/backupd and DATA/backupd/scratch are made searchable
(o+x, never listable), as the servicehost does for its own user; every
other directory keeps its mode.

PostgreSQL: either a fresh cluster (initdb) or a recovered PGDATA the caller
hands over (Barman's recovery). Either way the cluster's own pg_hba.conf is
replaced: `trust` on a unix socket in a private (0700) directory, which only
root and the scratch user can reach, and scram-sha-256 on loopback TCP. A
recovered cluster's superuser is not known in advance: the caller names one
role that exists (`login_as`, the backup role) and the bootstrap superuser
(oid 10) is looked up through it. Settings that could stop a copy of a
production cluster from starting on the backup host (preloaded libraries,
archiving, hot standby's checks of the primary's limits) are overridden on
the command line; durability is off (fsync), it is a scratch.

A recovered cluster is ready when it accepts connections and is no longer in
recovery: with hot_standby off no connection is accepted before promotion,
so "ready" means recovery reached its target and promoted. If the postmaster
exits first (a recovery that cannot reach its target is FATAL), the error
carries the last lines of its log.

Stopping: SIGINT (PostgreSQL's fast shutdown) or SIGTERM (Redis), a grace
period, then SIGKILL to the process group (`roost.proc.stop.terminate`),
also when the block is cancelled; each server also dies with its owner
(PR_SET_PDEATHSIG). The run directory goes with it; a recovered PGDATA
handed in by the caller is the caller's to delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psycopg

from roost.backups.layout import Layout
from roost.backups.pgfacts import BASE_ENV, PG_BIN, PgConn, pg_tool, run_tool
from roost.proc import spawn as proc
from roost.proc.stop import terminate
from roost.sysuser import Account, check_reachable, chown_tree, ensure_system_user

T = TypeVar("T")
SCRATCH_USER = "roost-backup"
SCRATCH_SUPERUSER = "roost-scratch"
LOOPBACK = "127.0.0.1"
INITDB_TIMEOUT_S = 120.0
PG_READY_TIMEOUT_S = 120.0
REDIS_READY_TIMEOUT_S = 600.0
PG_STOP_GRACE_S = 30.0
REDIS_STOP_GRACE_S = 10.0
# A port taken between our probe and the server's bind: try another.
START_TRIES = 3
SOCKET_PATH_MAX = 100
LOG_TAIL = 2000

HBA = """\
# Written by roost backupd for a scratch server; edits here are lost.
local   all   all                  trust
host    all   all   127.0.0.1/32   scram-sha-256
"""

# Overrides for a cluster copied from elsewhere: see the module docstring.
PG_SETTINGS = {
    "listen_addresses": LOOPBACK,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "archive_mode": "off",
    "hot_standby": "off",
    "shared_preload_libraries": "",
    "logging_collector": "off",
    "log_destination": "stderr",
    "max_connections": "40",
    "shared_buffers": "128MB",
}


class ScratchError(RuntimeError):
    """A scratch server could not be prepared or started (the message says why)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def scratch_account() -> Account:
    return ensure_system_user(SCRATCH_USER)


def make_reachable(layout: Layout, path: Path, account: Account) -> None:
    """Let `account` walk down to `path` (o+x on DATA, DATA/backupd and the
    scratch directory); raise Unreachable if a directory above DATA blocks it."""
    if not account.dropped:
        return
    for d in (layout.data_dir, layout.root, layout.scratch):
        os.chmod(d, os.stat(d).st_mode | 0o111)
    check_reachable(account.name, account.uid, path)


def _setup(account: Account) -> proc.ChildSetup:
    if not account.dropped:
        return proc.child_setup()
    return proc.child_setup(uid=account.uid, gid=account.gid)


def _give(account: Account, path: Path) -> None:
    if account.dropped:
        chown_tree(path, account.uid, account.gid)


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-LOG_TAIL:].strip()
    except OSError:
        return ""


def scratch_dir(layout: Layout, prefix: str, account: Account | None = None) -> Path:
    """A fresh private directory under DATA/backupd/scratch that the scratch
    user owns and can reach (a recovered PGDATA goes inside one)."""
    account = account or scratch_account()
    layout.scratch.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix=prefix, dir=layout.scratch))
    os.chmod(run, 0o700)
    _give(account, run)
    make_reachable(layout, run, account)
    return run


async def _spawn(
    argv: list[str], account: Account, log: Path, cwd: Path
) -> asyncio.subprocess.Process:
    return await proc.start_logged(argv, log, env=BASE_ENV, cwd=cwd, setup=_setup(account))


# ------------------------------------------------------------------ PostgreSQL


@dataclass(frozen=True)
class ScratchPg:
    pgdata: Path
    port: int
    socket_dir: Path  # trust for root and the scratch user only
    superuser: str
    # The superuser's password over loopback TCP ("" for a recovered cluster:
    # its roles keep the passwords they had).
    password: str
    log: Path

    @property
    def conn(self) -> PgConn:
        """Superuser access over the private socket (what pg_dump/pg_restore use)."""
        return PgConn(host=str(self.socket_dir), port=self.port, user=self.superuser)

    async def connect(self, dbname: str = "postgres") -> psycopg.AsyncConnection:
        """An autocommit superuser connection."""
        return await psycopg.AsyncConnection.connect(**self.conn.kwargs(dbname), autocommit=True)


async def _initdb(pgdata: Path, account: Account, password: str, log: Path) -> None:
    pgdata.mkdir(mode=0o700)
    pwfile = pgdata.parent / "pwfile"
    pwfile.write_text(password + "\n")
    os.chmod(pwfile, 0o600)
    _give(account, pgdata)
    _give(account, pwfile)
    argv = [pg_tool("initdb"), "-D", str(pgdata), "-U", SCRATCH_SUPERUSER, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-locale",
            "--no-sync"]  # fmt: skip
    try:
        status, out = await run_tool(
            argv, timeout=INITDB_TIMEOUT_S, setup=_setup(account), cwd=pgdata
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if status != 0:
        raise ScratchError(f"initdb failed (status {status}): {out.strip()[-LOG_TAIL:]}")


def _prepare_pgdata(pgdata: Path, account: Account) -> None:
    """Our pg_hba.conf (and an empty pg_ident.conf, and a postgresql.conf when the
    cluster kept its configuration elsewhere), the tree given to the user."""
    (pgdata / "pg_hba.conf").write_text(HBA)
    ident = pgdata / "pg_ident.conf"
    if not ident.exists():
        ident.write_text("")
    conf = pgdata / "postgresql.conf"
    if not conf.exists():
        conf.write_text("")
    os.chmod(pgdata, 0o700)
    _give(account, pgdata)


def _pg_argv(pgdata: Path, port: int, sock: Path) -> list[str]:
    settings = {
        **PG_SETTINGS,
        "port": str(port),
        "unix_socket_directories": str(sock),
        "hba_file": str(pgdata / "pg_hba.conf"),
        "ident_file": str(pgdata / "pg_ident.conf"),
    }
    argv = [pg_tool("postgres"), "-D", str(pgdata)]
    for k, v in settings.items():
        argv += ["-c", f"{k}={v}"]
    return argv


async def _until_ready(
    server: asyncio.subprocess.Process,
    probe: Callable[[], Awaitable[T | None]],
    what: str,
    log: Path,
    timeout: float,
) -> T:
    """`probe()` until it answers (None: not yet); ScratchError, with the last
    lines of the server's log, if the server exits or `timeout` runs out."""
    try:
        async with asyncio.timeout(timeout):
            while (answer := await probe()) is None:
                if server.returncode is not None:
                    raise ScratchError(
                        f"scratch {what} exited (status {server.returncode}):\n{_tail(log)}"
                    )
                await asyncio.sleep(0.1)
            return answer
    except TimeoutError:
        raise ScratchError(f"scratch {what} not ready within {timeout:g}s:\n{_tail(log)}") from None


async def _pg_probe(conn: PgConn) -> str | None:
    """The bootstrap superuser's name once the server accepts `conn` and is
    out of recovery (no connection is accepted before promotion)."""
    try:
        c = await psycopg.AsyncConnection.connect(
            **conn.kwargs("postgres", connect_timeout=2), autocommit=True
        )
    except psycopg.OperationalError as exc:
        if "does not exist" in str(exc):
            raise ScratchError(f"cannot log in to the scratch server: {exc}") from None
        return None  # starting, or recovering
    async with c:
        cur = await c.execute(
            "SELECT pg_is_in_recovery(), (SELECT rolname FROM pg_roles WHERE oid = 10)"
        )
        row = await cur.fetchone()
    return str(row[1]) if row is not None and not row[0] else None


@contextlib.asynccontextmanager
async def scratch_postgres(
    layout: Layout,
    *,
    pgdata: Path | None = None,
    login_as: str = "",
    ready_timeout: float = PG_READY_TIMEOUT_S,
) -> AsyncIterator[ScratchPg]:
    """A scratch PostgreSQL: a fresh cluster, or the recovered `pgdata` (then
    `login_as` names a role it has; the superuser is found through it)."""
    account = scratch_account()
    run = scratch_dir(layout, "pg-", account)
    # The socket goes with the run directory (whoever clears DATA/backupd/
    # scratch after a crash clears it too), unless that path is too long for
    # a unix socket (107 bytes): then under /tmp.
    sock = run / "sock"
    if len(str(sock / ".s.PGSQL.65535")) > SOCKET_PATH_MAX:
        sock = Path(tempfile.mkdtemp(prefix="roost-scratch-"))
    try:
        sock.mkdir(mode=0o700, exist_ok=True)
        _give(account, sock)
        log = run / "postgres.log"
        password = ""
        if pgdata is None:
            pgdata = run / "pgdata"
            password = secrets.token_urlsafe(24)
            await _initdb(pgdata, account, password, log)
            login = SCRATCH_SUPERUSER
        else:
            if not login_as:
                raise ScratchError("a recovered cluster needs login_as (a role it has)")
            login = login_as
        _prepare_pgdata(pgdata, account)
        make_reachable(layout, pgdata, account)
        for attempt in range(START_TRIES):
            port = free_port()
            server = await _spawn(_pg_argv(pgdata, port, sock), account, log, pgdata)
            try:
                conn = PgConn(host=str(sock), port=port, user=login)
                probe = functools.partial(_pg_probe, conn)
                superuser = await _until_ready(server, probe, "PostgreSQL", log, ready_timeout)
            except ScratchError:
                await asyncio.shield(terminate(server, PG_STOP_GRACE_S, signal.SIGINT))
                if attempt + 1 < START_TRIES and "could not bind" in _tail(log):
                    continue
                raise
            except BaseException:
                await asyncio.shield(terminate(server, PG_STOP_GRACE_S, signal.SIGINT))
                raise
            try:
                yield ScratchPg(pgdata, port, sock, superuser, password, log)
            finally:
                await asyncio.shield(terminate(server, PG_STOP_GRACE_S, signal.SIGINT))
            break
    finally:
        shutil.rmtree(sock, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)


# ------------------------------------------------------------------ Redis


@dataclass(frozen=True)
class ScratchRedis:
    port: int
    password: str
    dir: Path
    host: str = LOOPBACK

    async def command(self, *args: str, timeout: float = 30.0) -> str:
        """One command through redis-cli; its reply as text (errors raise)."""
        argv = [_redis_cli(), "-h", self.host, "-p", str(self.port), "--no-auth-warning", *args]
        status, out = await run_tool(argv, env={"REDISCLI_AUTH": self.password}, timeout=timeout)
        out = out.strip()
        if status != 0 or out.startswith(("ERR", "LOADING", "NOAUTH", "WRONGPASS", "(error)")):
            raise ScratchError(f"redis-cli {args[0] if args else ''}: {out[-500:]}")
        return out

    async def key_count(self) -> int:
        """Keys in every database (INFO keyspace)."""
        info = await self.command("INFO", "keyspace")
        return sum(int(n) for n in re.findall(r"^db\d+:keys=(\d+)", info, re.MULTILINE))


def _redis_server() -> str:
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def _redis_cli() -> str:
    return shutil.which("redis-cli") or "/usr/bin/redis-cli"


def redis_conf(port: int, password: str, directory: Path) -> str:
    """A scratch redis-server's config (the password stays out of `ps`)."""
    return "\n".join([
        f"port {port}",
        f"bind {LOOPBACK}",
        "protected-mode yes",
        f"dir {directory}",
        "dbfilename dump.rdb",
        "appendonly no",
        'save ""',
        f"requirepass {password}",
        "daemonize no",
        "logfile \"\"",
        "",
    ])  # fmt: skip


async def _redis_probe(r: ScratchRedis) -> bool | None:
    try:
        return True if await r.command("PING", timeout=5) == "PONG" else None
    except ScratchError:
        return None  # not listening yet, or still loading the RDB


@contextlib.asynccontextmanager
async def scratch_redis(
    layout: Layout, *, rdb: Path | None = None, ready_timeout: float = REDIS_READY_TIMEOUT_S
) -> AsyncIterator[ScratchRedis]:
    """A scratch redis-server, loaded from `rdb` when given (a copy: the file is
    not touched)."""
    account = scratch_account()
    run = scratch_dir(layout, "redis-", account)
    try:
        data = run / "data"
        data.mkdir(mode=0o700)
        if rdb is not None:
            shutil.copyfile(rdb, data / "dump.rdb")
        log = run / "redis.log"
        for attempt in range(START_TRIES):
            password = secrets.token_urlsafe(24)
            r = ScratchRedis(port=free_port(), password=password, dir=data)
            conf = run / "redis.conf"
            conf.write_text(redis_conf(r.port, password, data))
            os.chmod(conf, 0o600)
            _give(account, run)
            server = await _spawn([_redis_server(), str(conf)], account, log, data)
            try:
                probe = functools.partial(_redis_probe, r)
                await _until_ready(server, probe, "redis-server", log, ready_timeout)
            except ScratchError:
                await asyncio.shield(terminate(server, REDIS_STOP_GRACE_S))
                if attempt + 1 < START_TRIES and "Address already in use" in _tail(log):
                    continue
                raise
            except BaseException:
                await asyncio.shield(terminate(server, REDIS_STOP_GRACE_S))
                raise
            try:
                yield r
            finally:
                await asyncio.shield(terminate(server, REDIS_STOP_GRACE_S))
            break
    finally:
        shutil.rmtree(run, ignore_errors=True)


__all__ = [
    "PG_BIN",
    "SCRATCH_USER",
    "ScratchError",
    "ScratchPg",
    "ScratchRedis",
    "scratch_dir",
    "scratch_postgres",
    "scratch_redis",
]
