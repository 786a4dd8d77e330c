"""The PostgreSQL cluster the servicehost owns: initdb once, then the postmaster.

Theory of operation: the cluster lives in DATA/servicehost/postgres, owned by
the service user. `initialize` runs initdb once (recorded in state.json with
the superuser's password, which exists only there). Each start rewrites
pg_hba.conf and passes every other setting on the postmaster's command line,
so the files on disk can never drift from what Roost means:

  * TCP only (no unix socket: the data directory's path may be too long for
    one, and nothing needs it); listening on loopback plus the host's cluster address.
  * The superuser may log in only from loopback, with its password.
  * An app's role may log in only to the database of the same name
    (pg_hba `sameuser`), with its password (scram-sha-256); the database
    also revokes CONNECT from PUBLIC, so either check alone keeps app A out
    of app B's database. Nothing is ever `trust`.
  * A replication slot holds at most ROOST_PG_SLOT_WAL_KEEP_MB of WAL
    (max_slot_wal_keep_size): a backupd that is gone for good would
    otherwise keep WAL until the disk is full; past it the slot is
    invalidated, and a backupd that comes back starts its window again.
  * The backup role (backuprole.py) may log in, for replication and to any
    database, only from loopback and from the backupd hosts of the address
    book; from anywhere else it is rejected outright. Its lines come before
    the apps' `sameuser` line, as do the lines that let an app's role open
    a database a restore made for it (`--to`). A change of these lines at
    run time is written and the postmaster reloads it (SIGHUP by
    pg_reload_conf()).

The postmaster is the supervised process itself (not pg_ctl), launched
detached so it outlives the daemon (detached.py); stop is SIGINT (fast
shutdown: roll back sessions, checkpoint). A new daemon adopts the
postmaster its data directory's postmaster.pid names (`find`) when that
file names this data directory and the process behind its pid is the
postgres binary, running in this directory as the service user, started
when the file says (a pid reused by another process is never adopted; its
stale file is removed so a new postmaster may start); once it answers, its
command line must be the one this daemon would give (port, addresses,
settings), or it is restarted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg

from roost.servicehost.binaries import Binaries
from roost.servicehost.detached import adoptable, cmdline, launch, retire, started_at
from roost.servicehost.names import BACKUP_ROLE
from roost.servicehost.spawn import run_tool, spawn
from roost.servicehost.state import PgCluster
from roost.servicehost.user import ServiceUser

log = logging.getLogger("roost.servicehost")

INITDB_TIMEOUT_S = 300.0
STOP_GRACE_S = 60.0
ADMIN_HOST = "127.0.0.1"
RELOAD_POLLS = 100  # of 50 ms: how long a caller waits for a reload to be seen

LOOPBACKS = ("127.0.0.1/32", "::1/128")
WILDCARDS = ("", "*", "0.0.0.0", "::")
# postmaster.pid's start time against the process's own: the same start.
START_SLACK_S = 5.0


@dataclass(frozen=True)
class PidRecord:
    """What postmaster.pid says (its first lines)."""

    pid: int
    data_dir: str
    started: float  # epoch seconds
    port: int


def parse_postmaster_pid(text: str) -> PidRecord | None:
    """postmaster.pid's pid, data directory, start time and port (pure);
    None when it is not complete (a postmaster writing it now)."""
    lines = text.split("\n")
    if len(lines) < 4:
        return None
    try:
        pid, started, port = int(lines[0]), float(lines[2]), int(lines[3])
    except ValueError:
        return None
    if pid <= 0 or not lines[1]:
        return None
    return PidRecord(pid, lines[1], started, port)


def hba_address(host: str) -> str | None:
    """pg_hba's ADDRESS for one host: an IP as a single-address CIDR, a name
    as is (PostgreSQL checks it both ways by DNS); None for a wildcard."""
    if host in WILDCARDS:
        return None
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    return f"{ip}/{ip.max_prefixlen}"


def render_hba(
    superuser: str,
    backupd_hosts: Sequence[str] = (),
    copies: Sequence[tuple[str, str]] = (),
) -> str:
    """pg_hba.conf (pure). `backupd_hosts`: where the backup role may log in
    from besides loopback; `copies`: (database, app role) pairs, databases a
    restore made for that app (`--to`), which its role may open."""
    lines = [
        "# Written by the Roost servicehost; edits here are lost.",
        "# TYPE  DATABASE     USER          ADDRESS  METHOD",
        *(f"host    all          {superuser}  {a}  scram-sha-256" for a in LOOPBACKS),
    ]
    sources = list(LOOPBACKS)
    for h in backupd_hosts:
        a = hba_address(h)
        if a is not None and a not in sources:
            sources.append(a)
    for a in sources:
        lines.append(f"host    replication  {BACKUP_ROLE}  {a}  scram-sha-256")
        lines.append(f"host    all          {BACKUP_ROLE}  {a}  scram-sha-256")
    lines.append("host    replication  all           all  reject")
    lines.append(f"host    all          {BACKUP_ROLE}  all  reject")
    for database, role in sorted(copies):
        lines.append(f'host    "{database}"  "{role}"  all  scram-sha-256')
    lines.append("host    sameuser     all           all  scram-sha-256")
    return "\n".join(lines) + "\n"


def listen_addresses(hosts: list[str]) -> str:
    """PostgreSQL's listen_addresses for `addresses.listen_hosts`."""
    return "*" if "*" in hosts else ",".join(hosts)


class Postgres:
    name = "postgres"
    # SIGINT: PostgreSQL's fast shutdown (clients disconnected, a clean checkpoint).
    stop_signal: int = signal.SIGINT
    stop_grace_s: float = STOP_GRACE_S

    def __init__(
        self,
        bins: Binaries,
        pgdata: Path,
        logs: Path,
        user: ServiceUser,
        cluster: PgCluster,
        listen: list[str],
        slot_wal_keep_mb: int = 4096,
    ) -> None:
        self.bins = bins
        # max_slot_wal_keep_size: a backupd gone for good (its slot left
        # behind) would otherwise hold WAL until the disk is full.
        self.slot_wal_keep_mb = slot_wal_keep_mb
        self.pgdata = pgdata
        self.log_file = logs / "postgres.log"
        self.user = user
        self.cluster = cluster
        self.listen = listen_addresses(listen)
        # What pg_hba.conf admits besides the superuser and the apps (render_hba).
        self.backupd_hosts: list[str] = []
        self.copies: list[tuple[str, str]] = []
        # The port the postmaster last spawned listens on (the cluster's may
        # have changed since: a host restore moves it, adopt.py).
        self.spawned_port = 0

    # ------------------------------------------------------------ setup

    async def initialize(self) -> bool:
        """initdb unless done; True when it ran. The caller saves the state."""
        if self.cluster.initialized:
            return False
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            # A previous initdb died half-way (it was not recorded): keep the
            # remains for inspection, start afresh.
            aside = self.pgdata.with_name(f"postgres.failed-{int(time.time())}")
            log.warning("moving an unfinished PostgreSQL cluster aside to %s", aside)
            os.replace(self.pgdata, aside)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.pgdata, 0o700)
        self.user.chown_tree(self.pgdata)
        pwfile = self.pgdata.parent / ".pg-superuser-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.cluster.password + "\n")
        self.user.chown_tree(pwfile)
        try:
            argv = [
                self.bins.pg("initdb"), "-D", str(self.pgdata), "-U", self.cluster.superuser,
                f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale",
            ]  # fmt: skip
            status, out = await run_tool(
                argv,
                timeout=INITDB_TIMEOUT_S,
                user=self.user,
                cwd=self.pgdata,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if status != 0:
            raise RuntimeError(f"initdb failed (status {status}): {out.strip()[-2000:]}")
        log.info("initialised a PostgreSQL cluster in %s", self.pgdata)
        self.cluster.initialized = True
        return True

    def _write_hba(self) -> bool:
        """Write pg_hba.conf as it must be now; whether it changed."""
        hba = self.pgdata / "pg_hba.conf"
        text = render_hba(self.cluster.superuser, self.backupd_hosts, self.copies)
        try:
            if hba.read_text() == text:
                return False
        except FileNotFoundError:
            pass
        tmp = hba.with_name("pg_hba.conf.tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o600)
        self.user.chown_tree(tmp)
        os.replace(tmp, hba)
        return True

    async def refresh_hba(self) -> bool:
        """Rewrite pg_hba.conf if what it must admit changed, and have the
        running postmaster reload it; whether it changed."""
        if not self._write_hba():
            return False
        async with await self.connect() as conn:
            cur = await conn.execute("SELECT pg_conf_load_time()")
            before = (await cur.fetchone() or (None,))[0]
            await conn.execute("SELECT pg_reload_conf()")
            # The postmaster reloads on its own time (SIGHUP): a caller told
            # "changed" may rely on the new lines, so wait for the reload.
            for _ in range(RELOAD_POLLS):
                cur = await conn.execute("SELECT pg_conf_load_time()")
                if (await cur.fetchone() or (None,))[0] != before:
                    break
                await asyncio.sleep(0.05)
        log.info("pg_hba.conf changed; PostgreSQL reloaded it")
        return True

    def argv(self) -> list[str]:
        settings = {
            "listen_addresses": self.listen,
            "port": str(self.cluster.port),
            "unix_socket_directories": "",
            "password_encryption": "scram-sha-256",
            "logging_collector": "off",
            "log_destination": "stderr",
            "log_line_prefix": "%m [%p] %q%u@%d ",
            "max_slot_wal_keep_size": f"{self.slot_wal_keep_mb}MB",
        }
        argv = [self.bins.pg("postgres"), "-D", str(self.pgdata)]
        for k, v in settings.items():
            argv += ["-c", f"{k}={v}"]
        return argv

    # ------------------------------------------------------------ Server protocol

    async def find(self) -> int | None:
        """The postmaster an earlier daemon left on this data directory, or
        None (module docstring); one with other settings is stopped first."""
        rec = await asyncio.to_thread(self._recorded)
        if rec is None:
            return None
        running = await asyncio.to_thread(cmdline, rec.pid)
        if running != self.argv():
            log.info("the running PostgreSQL (pid %d) has other settings: restarting it", rec.pid)
            await retire(rec.pid, self.stop_signal, self.stop_grace_s)
            return None
        self.spawned_port = rec.port
        return rec.pid

    def running(self) -> bool:
        """Whether this cluster's postmaster runs now (an earlier daemon's)."""
        return self._recorded() is not None

    def _recorded(self) -> PidRecord | None:
        """postmaster.pid's record when its process is this cluster's postmaster."""
        path = self.pgdata / "postmaster.pid"
        try:
            rec = parse_postmaster_pid(path.read_text())
        except FileNotFoundError:
            return None
        if rec is None:
            return None  # being written: the postmaster that writes it judges it
        why = ""
        if os.path.realpath(rec.data_dir) != os.path.realpath(self.pgdata):
            why = f"it names data directory {rec.data_dir}"
        why = why or adoptable(rec.pid, self.bins.pg("postgres"), self.pgdata, self.user.run_uid)
        if not why and abs(started_at(rec.pid) - rec.started) > START_SLACK_S:
            why = f"pid {rec.pid} started at another time than the postmaster it names"
        if not why:
            return rec
        if psutil.pid_exists(rec.pid):
            # PostgreSQL would take that live process for a postmaster of
            # this directory and refuse to start: the record is stale.
            log.warning("postmaster.pid is stale (%s): removing it, not adopting", why)
            path.unlink(missing_ok=True)
        return None

    async def launch(self) -> int:
        self._write_hba()
        self.spawned_port = self.cluster.port
        return await launch(self.argv(), self.user, self.log_file, self.pgdata)

    async def spawn(self) -> asyncio.subprocess.Process:
        """A postmaster that is this process's child and dies with it: the
        offline rebuild's (rebuild.py), never a servicehost's."""
        self._write_hba()
        return await spawn(self.argv(), self.user, self.log_file, self.pgdata)

    async def wait_ready(self, pid: int, adopted: bool) -> None:
        while True:
            try:
                conn = await self.connect(timeout=2)
            except psycopg.OperationalError:
                # Starting, or recovering after a crash: keep asking.
                await asyncio.sleep(0.1)
                continue
            async with conn:
                cur = await conn.execute("SELECT current_setting('data_directory')")
                served = (await cur.fetchone() or ("",))[0]
                if os.path.realpath(served) != os.path.realpath(self.pgdata):
                    raise RuntimeError(
                        f"port {self.cluster.port} serves {served}, not this cluster"
                    )
                # Apps must not even open the maintenance databases.
                await conn.execute("REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC")
            break
        if adopted:
            await self.refresh_hba()  # (what it admits may have changed meanwhile)

    # ------------------------------------------------------------ admin access

    async def connect(self, dbname: str = "postgres", timeout: int = 5) -> psycopg.AsyncConnection:
        """An autocommit superuser connection (over loopback TCP)."""
        return await psycopg.AsyncConnection.connect(
            host=ADMIN_HOST,
            port=self.cluster.port,
            user=self.cluster.superuser,
            password=self.cluster.password,
            dbname=dbname,
            connect_timeout=timeout,
            autocommit=True,
        )

    async def tool_env(self) -> dict[str, str]:
        """libpq environment for pg_dump/pg_restore as the superuser."""
        return {
            "PGHOST": ADMIN_HOST,
            "PGPORT": str(self.cluster.port),
            "PGUSER": self.cluster.superuser,
            "PGPASSWORD": self.cluster.password,
        }
