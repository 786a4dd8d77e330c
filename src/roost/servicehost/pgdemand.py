"""When the servicehost's own PostgreSQL runs (pure): with the apps' databases.

On one machine the apps' PostgreSQL server is started when something needs
it, not at the daemon's start (Heroku's and Dokku's way: the database
server of the apps runs when some app has a database; the S3 server, s3.py,
follows the same rule). An idle platform with no app then holds no
postmaster, no WAL sender and no pg_receivewal of backupd: 25-31 MB of a
bare PostgreSQL 15 (docs/architecture.md, footprint). initdb still runs at
the start (disk only), so the first provision waits for the postmaster's
start alone.

It is started at the daemon's start when state.json says it is needed
(`needed_at_start`), and otherwise by the first request that needs it
(`ServiceHost.pg_up`: a provision, a restore's copy, a host restore). It is
not stopped with the last database: once backupd has streamed it (the
backup role's password is recorded) backupd keeps a Barman server for it,
its replication slot and base backups, and a server that came and went
would make that server vanish from backupd's sources and come back; so the
recorded password keeps it wanted, at every start after, as a database
does.
"""

from __future__ import annotations

from typing import Literal

from roost.servicehost.state import HostState

StartWhen = Literal["on-demand", "always"]
START_CHOICES: tuple[StartWhen, ...] = ("on-demand", "always")


def start_problem(value: str) -> str | None:
    """Why ROOST_POSTGRES_START cannot be `value`, or None."""
    if value in START_CHOICES:
        return None
    return f"ROOST_POSTGRES_START must be one of {', '.join(START_CHOICES)} (got {value!r})"


def needed_at_start(state: HostState, start: str, cluster: bool) -> str:
    """Why this host's PostgreSQL starts with the daemon ("" when it waits
    until something needs it). A cluster's servicehost (one other hosts
    reach, or with Redis pairs or a PostgreSQL pair) starts its own at the
    start, as before: the footprint this saves is one machine's, and a
    cluster's backupd and tests expect the server up with the daemon."""
    if start == "always":
        return "ROOST_POSTGRES_START=always"
    if cluster:
        return "a cluster's servicehost"
    dbs = len(state.of_kind("postgres"))
    if dbs:
        return f"{dbs} app database(s)"
    restores = [
        r for r in state.restores.values() if r.kind == "postgres" and r.step != "discarded"
    ]
    if restores:
        return f"{len(restores)} restore(s) of a database"
    if state.postgres is not None and state.postgres.backup_password:
        return "backupd streams it"
    return ""
