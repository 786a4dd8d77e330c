"""This servicehost's part of its pair's PostgreSQL (roost.servicehost.pgpair).

A servicehost whose bundle carried DATA/pgpair.json runs its member of the
pair's Patroni cluster itself, and makes the databases of the apps placed
on the pair there, not in its own PostgreSQL:

- `PairMember` is Patroni under the servicehost's supervisor (supervised.py)
  like its other servers: launched detached (detached.py), as the
  unprivileged `roost-pgpair` user, in DATA/pgpair (the directory `python
  -m roost.servicehost.pgpair DATA` uses too). It outlives the daemon: a
  restart or hand-over of the servicehost adopts the running Patroni (by
  the pid it recorded, checked to be Patroni on this configuration, in
  this directory, as that user) and never restarts PostgreSQL. Its stop
  (the servicehost's full stop) is SIGTERM: Patroni stops PostgreSQL and
  hands the leader key on.
- `PairAdmin` is what pgadmin needs of a PostgreSQL (connect as the
  superuser, run pg_dump) for the pair's current primary: libpq tries both
  members and keeps the one that takes writes (target_session_attrs), so a
  provision, a removal or a dump made after a failover lands on the new
  primary; the standby gets every change by replication. Each connection
  (and pg_dump's environment) lists the members the primary first and a
  silent host last, as a short probe of each finds them
  (`patroni.order_members`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import psycopg

from roost import patroni
from roost.servicehost import pgpair
from roost.servicehost.binaries import Binaries
from roost.servicehost.detached import adoptable, cmdline, launch
from roost.servicehost.user import ServiceUser
from roost.sysuser import Account, ensure_system_user

log = logging.getLogger("roost.servicehost")

PIDFILE = "patroni.pid"
HOME = "pgpair"


def interpreter(script: str) -> str:
    """The program a script's `#!` line runs (what /proc shows as its exe)."""
    try:
        with open(script, "rb") as fh:
            first = fh.readline(256)
    except OSError:
        return script
    if not first.startswith(b"#!"):
        return script
    return first[2:].split()[0].decode() if first[2:].split() else script


class PairMember:
    """This host's Patroni member, for `supervised.Servers`."""

    name = "pgpair"
    stop_signal: int = signal.SIGTERM
    stop_grace_s: float = pgpair.PATRONI_STOP_GRACE_S

    def __init__(self, plan: pgpair.PairPlan, data_dir: Path, logs: Path) -> None:
        self.plan = plan
        self.home = data_dir / HOME
        self.log_file = logs / "pgpair.log"
        self._account: Account | None = None

    def account(self) -> Account:
        if self._account is None:
            self._account = ensure_system_user(pgpair.USER)
        return self._account

    def user(self) -> ServiceUser:
        a = self.account()
        return ServiceUser(name=a.name, uid=a.uid, gid=a.gid, dropped=a.dropped)

    @property
    def config(self) -> Path:
        return self.home / "patroni.yml"

    def _prepare(self) -> list[str]:
        return pgpair.prepare(self.plan, self.home, self.account())

    async def find(self) -> int | None:
        try:
            pid = int((self.home / PIDFILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        program = patroni.binary("patroni")
        why = await asyncio.to_thread(
            adoptable, pid, interpreter(program), self.home, self.user().run_uid
        )
        argv = await asyncio.to_thread(cmdline, pid)
        if not why and str(self.config) not in argv:
            why = f"pid {pid} is not Patroni on {self.config}"
        if why:
            log.info("pgpair: not adopting the pid %s names: %s", PIDFILE, why)
            return None
        if program not in argv:
            # Started by an older Roost with another Patroni (Debian's 3.0.2,
            # roost.patroni says why it is not run): kept, since stopping a
            # primary's Patroni is a failover the apps would feel, but said.
            log.warning(
                "pgpair: the running Patroni (pid %d) is %s, not %s: stop it"
                " (kill %d) when a failover is acceptable and this servicehost"
                " starts the new one",
                pid, " ".join(argv[:2]), program, pid,
            )  # fmt: skip
        # Its configuration as this daemon would write it (the plan is the same file).
        await asyncio.to_thread(self._prepare)
        return pid

    async def launch(self) -> int:
        argv = await asyncio.to_thread(self._prepare)
        pid = await launch(argv, self.user(), self.log_file, self.home)
        tmp = self.home / (PIDFILE + ".tmp")
        tmp.write_text(f"{pid}\n")
        os.replace(tmp, self.home / PIDFILE)
        return pid

    async def wait_ready(self, pid: int, adopted: bool) -> None:
        """Up once Patroni's REST API answers (its PostgreSQL may still be
        starting or joining: requests go to whichever member is primary)."""
        import httpx  # pairs only: a servicehost alone never loads it (issue 21)

        url = f"http://{patroni.url_host(patroni.bare(self.plan.host))}:{self.plan.rest_port}"
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                try:
                    await http.get(url + "/liveness")
                    return
                except httpx.HTTPError:
                    await asyncio.sleep(0.2)


@dataclass
class _Superuser:
    superuser: str


class PairAdmin:
    """The pair's current primary, as pgadmin reaches a PostgreSQL."""

    def __init__(self, plan: pgpair.PairPlan, bins: Binaries) -> None:
        self.plan = plan
        self.bins = bins
        self.cluster = _Superuser(patroni.SUPERUSER)

    async def _hosts(self) -> tuple[str, str]:
        """libpq's host and port lists, the primary first and a silent member
        last (`patroni.order_members`: libpq waits out the connect timeout on
        a host that is down without a reset before it tries the next)."""
        members = [patroni.bare(h) for h in self.plan.hosts]
        members = await patroni.order_members(members, self.plan.pg_port, self.plan.rest_port)
        return ",".join(members), ",".join(str(self.plan.pg_port) for _ in members)

    async def connect(self, dbname: str = "postgres", timeout: int = 5) -> psycopg.AsyncConnection:
        """An autocommit superuser connection to the pair's primary."""
        hosts, ports = await self._hosts()
        return await psycopg.AsyncConnection.connect(
            host=hosts,
            port=ports,
            user=patroni.SUPERUSER,
            password=self.plan.superuser_password,
            dbname=dbname,
            connect_timeout=timeout,
            target_session_attrs="read-write",
            autocommit=True,
        )

    async def tool_env(self) -> dict[str, str]:
        """libpq environment for pg_dump/pg_restore on the primary."""
        hosts, ports = await self._hosts()
        return {
            "PGHOST": hosts,
            "PGPORT": ports,
            "PGUSER": patroni.SUPERUSER,
            "PGPASSWORD": self.plan.superuser_password,
            "PGTARGETSESSIONATTRS": "read-write",
            # As connect's: without one a silent member's TCP connect is
            # retried for minutes before libpq tries the next.
            "PGCONNECT_TIMEOUT": "5",
        }
