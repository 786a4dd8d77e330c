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

The postmaster is the supervised process itself (not pg_ctl), so a crash is
its exit; stop is SIGINT (fast shutdown: roll back sessions, checkpoint).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

import psycopg

from roost.servicehost.binaries import Binaries
from roost.servicehost.spawn import run_tool, spawn
from roost.servicehost.state import PgCluster
from roost.servicehost.user import ServiceUser

log = logging.getLogger("roost.servicehost")

INITDB_TIMEOUT_S = 300.0
STOP_GRACE_S = 60.0
ADMIN_HOST = "127.0.0.1"

HBA = """\
# Written by the Roost servicehost at every start; edits here are lost.
# TYPE  DATABASE  USER   ADDRESS        METHOD
host    all       {su}   127.0.0.1/32   scram-sha-256
host    all       {su}   ::1/128        scram-sha-256
host    sameuser  all    all            scram-sha-256
"""


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
    ) -> None:
        self.bins = bins
        self.pgdata = pgdata
        self.log_file = logs / "postgres.log"
        self.user = user
        self.cluster = cluster
        self.listen = listen_addresses(listen)

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

    def _write_hba(self) -> None:
        hba = self.pgdata / "pg_hba.conf"
        tmp = hba.with_name("pg_hba.conf.tmp")
        tmp.write_text(HBA.format(su=self.cluster.superuser))
        os.chmod(tmp, 0o600)
        self.user.chown_tree(tmp)
        os.replace(tmp, hba)

    def argv(self) -> list[str]:
        settings = {
            "listen_addresses": self.listen,
            "port": str(self.cluster.port),
            "unix_socket_directories": "",
            "password_encryption": "scram-sha-256",
            "logging_collector": "off",
            "log_destination": "stderr",
            "log_line_prefix": "%m [%p] %q%u@%d ",
        }
        argv = [self.bins.pg("postgres"), "-D", str(self.pgdata)]
        for k, v in settings.items():
            argv += ["-c", f"{k}={v}"]
        return argv

    # ------------------------------------------------------------ Server protocol

    async def spawn(self) -> asyncio.subprocess.Process:
        self._write_hba()
        return await spawn(self.argv(), self.user, self.log_file, self.pgdata)

    async def wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        while True:
            try:
                conn = await self.connect(timeout=2)
            except psycopg.OperationalError:
                # Starting, or recovering after a crash: keep asking.
                await asyncio.sleep(0.1)
                continue
            async with conn:
                # Apps must not even open the maintenance databases.
                await conn.execute("REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC")
            return

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

    def tool_env(self) -> dict[str, str]:
        """libpq environment for pg_dump/pg_restore as the superuser."""
        return {
            "PGHOST": ADMIN_HOST,
            "PGPORT": str(self.cluster.port),
            "PGUSER": self.cluster.superuser,
            "PGPASSWORD": self.cluster.password,
        }
