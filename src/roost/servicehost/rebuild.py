"""A servicehost rebuilt on a fresh machine, before it first starts (`roost restore`).

The state.json of the servicehost that was lost says which databases
existed, with which roles and passwords, and the superuser's password; its
cluster is gone. `rebuild_cluster` makes it again, offline, while no daemon
runs: initdb under the recorded superuser and password, the postmaster on
a private loopback port (not the recorded one, which a platform still up
elsewhere on this machine may hold), each app's role and database as a
provision makes them (`pgadmin.ensure_database`), each app's dump loaded
into its database as the app's own role (`pg_restore --no-owner
--no-privileges --role`: every object the app's, as if it had made it),
and each database handed to the caller's check (backupd's facts, taken
when the dump was) before the postmaster stops. Only then is the cluster
recorded as initialised, so the servicehost's first start finds it ready
and serves every app the same credentials on the same port.

What the old state recorded of restores (kept and prepared databases of
the lost cluster) is forgotten: those databases did not come back.

The live path (a running servicehost taking on a lost one's services,
adopt.py, while backupd loads the data) reads the state and makes the
roles and databases with the same `read_state` and `ensure_databases`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

import msgspec

from roost.proc.stop import terminate
from roost.servicehost import pgadmin
from roost.servicehost.binaries import find_binaries
from roost.servicehost.host import free_port
from roost.servicehost.layout import Layout
from roost.servicehost.postgres import STOP_GRACE_S, Postgres
from roost.servicehost.spawn import run_tool
from roost.servicehost.state import HostState, PgCluster, Service
from roost.servicehost.user import ServiceUser

log = logging.getLogger("roost.servicehost")

LOAD_TIMEOUT_S = 6 * 3600.0
START_TIMEOUT_S = 120.0
LOOPBACK = "127.0.0.1"

# The database's facts compared with those taken at backup time: what
# differs, in words ([] when it is the same). Given the running cluster (a
# superuser connection: pg.connect(), or pg.cluster's port and password).
Check = Callable[[Postgres, str], Awaitable[list[str]]]


class RebuildError(Exception):
    """The cluster could not be rebuilt (the message says which app and why)."""


def read_state(raw: bytes) -> HostState:
    """A lost servicehost's state.json (RebuildError when it does not read). Pure."""
    try:
        return msgspec.json.decode(raw, type=HostState)
    except msgspec.DecodeError as exc:  # (a ValidationError is one)
        raise RebuildError(f"the servicehost's state.json does not read: {exc}") from None


def fresh_state(raw: bytes) -> HostState:
    """Another machine's state.json, for a cluster to be made anew (pure)."""
    state = read_state(raw)
    if state.postgres is not None:
        state.postgres.initialized = False
    state.restores = {}
    return state


async def ensure_databases(
    pg: Postgres, services: Iterable[Service], connection_limit: int
) -> None:
    """Each app's role, with its recorded password, and its database, as a
    provision makes them (empty when new); also the live path's, when a
    running servicehost takes on a lost one's services (adopt.py)."""
    for svc in sorted(services, key=lambda s: s.app):
        if svc.kind == "postgres":
            await pgadmin.ensure_database(pg, svc.database, svc.password, connection_limit)


async def rebuild_cluster(
    data_dir: Path,
    state: HostState,
    dumps: Mapping[str, Path],
    user: ServiceUser,
    connection_limit: int,
    check: Check,
) -> None:
    """Make `state`'s cluster under `data_dir` with every app's database,
    `dumps` (app -> pg_dump -Fc file) loaded and checked; then mark it
    initialised in `state` (the caller saves it). RebuildError on failure."""
    cluster = state.postgres
    if cluster is None:
        return
    layout = Layout(data_dir)
    layout.create(searchable=user.dropped)
    user.check_reachable(layout.root)
    # Its own port while loading; the recorded one is the servicehost's.
    loading = PgCluster(port=free_port(), superuser=cluster.superuser, password=cluster.password)
    pg = Postgres(find_binaries(), layout.postgres, layout.logs, user, loading, [LOOPBACK])
    await pg.initialize()
    proc = await pg.spawn()
    try:
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await pg.wait_ready(proc.pid, adopted=False)
        except TimeoutError:
            raise RebuildError(
                f"PostgreSQL did not start in {START_TIMEOUT_S:.0f} s (see {pg.log_file})"
            ) from None
        await ensure_databases(pg, state.of_kind("postgres"), connection_limit)
        for svc in sorted(state.of_kind("postgres"), key=lambda s: s.app):
            dump = dumps.get(svc.app)
            if dump is None:
                continue  # no backup of it: the database comes back empty (the caller says so)
            status, out = await run_tool(
                [pg.bins.pg("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
                 f"--role={svc.username}", "--dbname", svc.database, str(dump)],
                env=await pg.tool_env(), timeout=LOAD_TIMEOUT_S,
            )  # fmt: skip
            if status != 0:
                raise RebuildError(
                    f"{svc.app}: pg_restore into {svc.database} failed (status {status}): "
                    f"{out.strip()[-1000:]}"
                )
            problems = await check(pg, svc.database)
            if problems:
                raise RebuildError(
                    f"{svc.app}: the database restored does not match its backup: "
                    + "; ".join(problems)
                )
            log.info("%s: database %s loaded and checked", svc.app, svc.database)
    finally:
        await terminate(proc, STOP_GRACE_S, signal.SIGINT)
    cluster.initialized = True
