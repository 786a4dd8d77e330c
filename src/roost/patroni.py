"""Patroni, for any PostgreSQL Roost makes highly available (shared, neutral).

Two roles run Patroni clusters: the state database (`roost.statedb`, one
cluster on the state hosts) and the servicehost pairs that hold apps'
databases (`roost.servicehost.pgpair`, one cluster per pair). Both use one
etcd, each cluster under its own scope. What they share lives here:

  - `Member` and `config(...)`: Patroni's configuration for one member
    (pure). Synchronous mode on, not strict: a commit is acknowledged once
    the standby has it and only the synchronous standby may be promoted,
    so a failover loses no acknowledged write; with the standby gone the
    primary goes on alone rather than stopping every write.
  - `view(cluster_json)`: what Patroni's REST `GET /cluster` says, as the
    primary, its standbys and their lag (pure), for `roost services info`
    and the tests.
  - `order_members(hosts, ...)`: a pair's (or any Patroni cluster's)
    members as libpq's multi-host list should try them, the primary first
    and silent hosts last (`primary_first`, pure, over what a short probe
    of each member heard).
  - the process side of running it (`binary`, `pg_bin_dir`, `private_file`,
    `private_dir`, `program`): Patroni and etcd run as an unprivileged user
    (PostgreSQL refuses root), supervised by the process toolkit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import glob
import logging
import os
import shlex
import shutil
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from roost.proc import children as C
from roost.proc import spawn
from roost.proc.exits import ConfigError
from roost.proc.supervise import Program, Supervisor
from roost.sysuser import Account, check_reachable, ensure_system_user

SUPERUSER = "postgres"
REPLICATOR = "replicator"
REST_USER = "patroni"
NAMESPACE = "/roost/"
INSTALL_HINT = "apt-get install etcd-server patroni (scripts/install does it as root)"

# The Patroni Roost runs: newer than Debian bookworm's 3.0.2, whose etcd3
# client, when its own lease had expired (its host cut off for longer than
# the ttl), took a new lease and wrote the leader key without looking whose
# it was: a former primary came back from a partition, took the key from
# the member promoted meanwhile and promoted itself on its old history; the
# other one's acknowledged writes were then lost when it was made a copy of
# it again (seen in tests/cluster/test_pg_pair_failover). Fixed in 3.0.3
# ("Make sure the leader key isn't unconditionally overwritten"). Only
# Patroni itself is installed there (scripts/install), on the system Python
# with Debian's packages for the rest, where the services' users run it.
PATRONI_HOME = Path("/opt/roost/patroni")
PATRONI_VERSION = "3.0.4"
PATRONI_HINT = (
    f"Patroni {PATRONI_VERSION} in {PATRONI_HOME}: scripts/install puts it there as root"
    " (Debian's patroni 3.0.2 can hand the leader key to a second member)"
)


def bare(host: str) -> str:
    """An address as libpq and Patroni's host:port lists take it."""
    return host[1:-1] if host.startswith("[") else host


def url_host(host: str) -> str:
    """An address as a URL's authority takes it (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclasses.dataclass(frozen=True, kw_only=True)
class Member:
    """One Patroni member: which cluster, where, and its secrets."""

    scope: str
    host: str  # this member's address (also its Patroni name)
    etcd: list[str]  # etcd hosts
    etcd_client_port: int
    pg_port: int
    rest_port: int
    ttl: int
    loop_wait: int
    retry_timeout: int
    superuser_password: str
    replication_password: str
    rest_password: str
    # Run once by the first primary after initdb (a file of SQL under home).
    post_bootstrap_sql: str = "bootstrap.sql"
    parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # pg_hba lines of this cluster's own, after the common ones.
    hba: tuple[str, ...] = ()


class Plan(Protocol):
    """What a plan of a Patroni cluster (the state database's, a pair's) says
    of this host's member: `member_of` reads these."""

    @property
    def scope(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def etcd(self) -> list[str]: ...
    @property
    def etcd_client_port(self) -> int: ...
    @property
    def pg_port(self) -> int: ...
    @property
    def rest_port(self) -> int: ...
    @property
    def ttl(self) -> int: ...
    @property
    def loop_wait(self) -> int: ...
    @property
    def retry_timeout(self) -> int: ...
    @property
    def superuser_password(self) -> str: ...
    @property
    def replication_password(self) -> str: ...
    @property
    def rest_password(self) -> str: ...


def member_of(
    plan: Plan, parameters: Mapping[str, Any] | None = None, hba: tuple[str, ...] = ()
) -> Member:
    """The plan's host as a member of its cluster (`parameters`: PostgreSQL
    settings of this cluster's own; `hba`: pg_hba lines of its own)."""
    return Member(
        scope=plan.scope,
        host=plan.host,
        etcd=plan.etcd,
        etcd_client_port=plan.etcd_client_port,
        pg_port=plan.pg_port,
        rest_port=plan.rest_port,
        ttl=plan.ttl,
        loop_wait=plan.loop_wait,
        retry_timeout=plan.retry_timeout,
        superuser_password=plan.superuser_password,
        replication_password=plan.replication_password,
        rest_password=plan.rest_password,
        parameters=dict(parameters or {}),
        hba=hba,
    )


def config(m: Member, home: Path, bin_dir: Path) -> dict[str, Any]:
    """Patroni's configuration for this member (`home`: its directory, owned
    by the user it runs as; PostgreSQL's data and socket live under it)."""
    me = bare(m.host)
    sql = shlex.join([str(bin_dir / "psql"), "-v", "ON_ERROR_STOP=1", "-q", "-f"])
    return {
        "scope": m.scope,
        "namespace": NAMESPACE,
        "name": m.host,
        "restapi": {
            "listen": f"{url_host(me)}:{m.rest_port}",
            "connect_address": f"{url_host(me)}:{m.rest_port}",
            "authentication": {"username": REST_USER, "password": m.rest_password},
        },
        "etcd3": {
            "hosts": [f"{url_host(h)}:{m.etcd_client_port}" for h in m.etcd],
            "protocol": "http",
        },
        "bootstrap": {
            "dcs": {
                "ttl": m.ttl,
                "loop_wait": m.loop_wait,
                "retry_timeout": m.retry_timeout,
                "maximum_lag_on_failover": 1048576,
                "synchronous_mode": True,
                "synchronous_mode_strict": False,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "wal_log_hints": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "max_connections": 200,
                        **m.parameters,
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
            # Patroni appends the connection string; psql takes it as the database.
            "post_bootstrap": f"{sql} {shlex.quote(str(home / m.post_bootstrap_sql))}",
        },
        "postgresql": {
            "listen": f"{me}:{m.pg_port}",
            "connect_address": f"{url_host(me)}:{m.pg_port}",
            "data_dir": str(home / "pgdata"),
            "bin_dir": str(bin_dir),
            "pgpass": str(home / "pgpass"),
            "authentication": {
                "superuser": {"username": SUPERUSER, "password": m.superuser_password},
                "replication": {"username": REPLICATOR, "password": m.replication_password},
            },
            "parameters": {"unix_socket_directories": str(home / "run")},
            # A standby is copied (pg_basebackup) after an immediate
            # checkpoint on the primary: by default pg_basebackup waits for a
            # spread one, which kept a new or reinitialized standby from
            # existing for 90 s and more while the pair had no copy (seen in
            # tests/cluster/test_statedb_failover.py: 94 s, of 927 buffers).
            "basebackup": [{"checkpoint": "fast"}],
            # The socket's directory is the Patroni user's own (0700): only it
            # (and root) connects without a password.
            "pg_hba": [
                "local all all trust",
                f"host replication {REPLICATOR} 0.0.0.0/0 scram-sha-256",
                f"host replication {REPLICATOR} ::/0 scram-sha-256",
                "host all all 0.0.0.0/0 scram-sha-256",
                "host all all ::/0 scram-sha-256",
                *m.hba,
            ],
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }


# ------------------------------------------------------------ what Patroni says


@dataclasses.dataclass(frozen=True)
class MemberView:
    name: str
    role: str  # "leader", "sync_standby", "replica", ...
    state: str  # "running", "streaming", "stopped", ...
    host: str
    port: int
    lag_bytes: int | None  # behind the primary's WAL; None: unknown (e.g. the primary)


# A member's state while pg_basebackup makes it from the leader (a new
# member, or one reinitialized: `POST /reinitialize`).
CREATING_REPLICA = "creating replica"


@dataclasses.dataclass(frozen=True)
class ClusterView:
    members: tuple[MemberView, ...]

    @property
    def primary(self) -> MemberView | None:
        return next((m for m in self.members if m.role in ("leader", "master")), None)

    @property
    def standbys(self) -> list[MemberView]:
        return [m for m in self.members if m is not self.primary]

    @property
    def synchronous(self) -> MemberView | None:
        return next((m for m in self.members if m.role == "sync_standby"), None)


def view(cluster: Mapping[str, Any]) -> ClusterView:
    """Patroni's `GET /cluster` answer as a ClusterView (pure).

    Patroni reports a member's lag in bytes, or "unknown" when it cannot
    tell (a standby not streaming); the primary has none.
    """
    members = []
    for m in cluster.get("members", []):
        lag = m.get("lag")
        members.append(
            MemberView(
                name=str(m.get("name", "")),
                role=str(m.get("role", "")),
                state=str(m.get("state", "")),
                host=str(m.get("host", "")),
                port=int(m.get("port", 0) or 0),
                lag_bytes=lag if isinstance(lag, int) else None,
            )
        )
    return ClusterView(tuple(sorted(members, key=lambda x: x.name)))


# ------------------------------------------------------------ which member first

# How long a probe of a member waits for an answer. On a LAN a live
# member's Patroni and PostgreSQL answer in milliseconds; a host that is
# down without a reset (a power cut, a partition: packets dropped) never
# does, and libpq would wait its whole connect_timeout on it.
PROBE_TIMEOUT_S = 1.0


class Heard(enum.IntEnum):
    """What a probe of one member heard, best first (as `primary_first` sorts)."""

    PRIMARY = 0  # Patroni's `GET /primary` said 200: it leads and takes writes
    ANSWERED = 1  # the host answered (a port open or refused, any HTTP status)
    SILENT = 2  # nothing within the probe's time


def primary_first(hosts: Sequence[str], heard: Mapping[str, Heard]) -> list[str]:
    """`hosts` in the order libpq should try them (pure): the primary, then
    the members that answered, then the silent ones (a host `heard` does not
    name counts as silent); each group in the order given. Never drops a
    host: the order is only a preference, libpq still falls through to the
    next when one fails or does not take writes."""
    return sorted(hosts, key=lambda h: heard.get(h, Heard.SILENT))


async def _primary_status(host: str, rest_port: int) -> int:
    """The HTTP status of Patroni's `GET /primary` on `host` (0: an answer
    that is not HTTP). Patroni answers this read without credentials."""
    reader, writer = await asyncio.open_connection(host, rest_port)
    try:
        request = f"GET /primary HTTP/1.0\r\nHost: {url_host(host)}:{rest_port}\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        words = (await reader.readline()).split()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if len(words) >= 2 and words[0].startswith(b"HTTP/") and words[1].isdigit():
        return int(words[1])
    return 0


async def _port_answers(host: str, port: int) -> None:
    """Connects to `host`:`port` and hangs up (OSError when it cannot)."""
    _, writer = await asyncio.open_connection(host, port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


# Patroni's head start: its answer (within this part of the probe's time)
# says all, and PostgreSQL's port is not touched (each connection accepted
# there is a backend forked); past it, or when Patroni does not answer,
# that port says whether the host is up at all (Patroni's port filtered,
# Patroni itself down).
REST_HEAD_START = 0.25


async def _hear(host: str, pg_port: int, rest_port: int, timeout: float) -> Heard:
    """One member, within `timeout`: Patroni asked whether it is the
    primary (with `rest_port`), and its PostgreSQL port connected to when
    there is no `rest_port` or Patroni has not answered within its head
    start. A refused connection is an answer: the host is up and says so."""
    until = asyncio.get_running_loop().time() + timeout

    async def bounded(probe: Callable[[], Awaitable[int | None]]) -> Heard:
        try:
            async with asyncio.timeout_at(until):
                said = await probe()
        except (ConnectionRefusedError, ConnectionResetError):
            return Heard.ANSWERED
        except (OSError, TimeoutError, ValueError):
            return Heard.SILENT
        return Heard.PRIMARY if said == 200 else Heard.ANSWERED

    def postgresql() -> Awaitable[Heard]:
        return bounded(lambda: _port_answers(host, pg_port))

    if not rest_port:
        return await postgresql()
    probes = {asyncio.ensure_future(bounded(lambda: _primary_status(host, rest_port)))}
    try:
        done, _ = await asyncio.wait(probes, timeout=timeout * REST_HEAD_START)
        if done and (said := done.pop().result()) != Heard.SILENT:
            return said
        # Whichever answers first of the two from now on.
        probes.add(asyncio.ensure_future(postgresql()))
        while probes:
            done, probes = await asyncio.wait(probes, return_when=asyncio.FIRST_COMPLETED)
            if (said := min(t.result() for t in done)) != Heard.SILENT:
                return said
        return Heard.SILENT
    finally:
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)


async def probe_members(
    hosts: Sequence[str], pg_port: int, rest_port: int = 0, timeout: float = PROBE_TIMEOUT_S
) -> dict[str, Heard]:
    """What each member answered, probed all at once (`_hear`); done as soon
    as one is the primary (the others' order no longer matters, those not
    heard yet count as silent), else within `timeout`."""
    tasks = {asyncio.ensure_future(_hear(bare(h), pg_port, rest_port, timeout)): h for h in hosts}
    heard: dict[str, Heard] = {}
    pending = set(tasks)
    try:
        while pending and Heard.PRIMARY not in heard.values():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                heard[tasks[task]] = task.result()
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return heard


async def order_members(
    hosts: Sequence[str], pg_port: int, rest_port: int = 0, timeout: float = PROBE_TIMEOUT_S
) -> list[str]:
    """`hosts` (a pair's members, as its multi-host connection string lists
    them) with the primary first and silent ones last, for libpq, which
    tries them in order and waits its connect_timeout on a silent one before
    the next. Asks Patroni's REST API on `rest_port` (0: not known, then
    only PostgreSQL's port is tried: live members first, in the order
    given). Takes a round trip when the primary answers, `timeout` at most."""
    if len(hosts) < 2:
        return list(hosts)
    return primary_first(hosts, await probe_members(hosts, pg_port, rest_port, timeout))


# ------------------------------------------------------------ running it


def binary(name: str) -> str:
    if name in ("patroni", "patronictl"):
        return patroni_binary(name)
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else ""
    )
    if not found:
        raise ConfigError(f"{name} is not installed: {INSTALL_HINT}")
    return found


def patroni_binary(name: str = "patroni", home: Path = PATRONI_HOME) -> str:
    """Patroni's program from `home`; ConfigError when it is not there or
    is not the version Roost runs (an older one elsewhere is never used)."""
    program = home / "bin" / name
    versions = sorted(home.glob("lib/python3*/site-packages/patroni/version.py"))
    try:
        said = versions[0].read_text() if versions else ""
    except OSError:
        said = ""
    if not said or not os.access(program, os.X_OK):
        raise ConfigError(f"{name} is not installed: {PATRONI_HINT}")
    if f"'{PATRONI_VERSION}'" not in said and f'"{PATRONI_VERSION}"' not in said:
        raise ConfigError(f"{versions[0]} is not Patroni {PATRONI_VERSION}: {PATRONI_HINT}")
    return str(program)


def pg_bin_dir() -> Path:
    """The newest PostgreSQL's server binaries (Debian keeps them off PATH)."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/postgres")),
        key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).parent
    raise ConfigError("PostgreSQL is not installed: apt-get install postgresql")


def private_file(path: Path, content: str, who: Account) -> None:
    """A file only `who` reads (it holds passwords)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    if who.dropped:
        os.chown(tmp, who.uid, who.gid)
    os.replace(tmp, path)


def private_dir(path: Path, who: Account) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if who.dropped:
        os.chown(path, who.uid, who.gid)
    path.chmod(0o700)


def program(name: str, argv: list[str], home: Path, who: Account, grace: float) -> Program:
    """A supervised program run as `who` in `home`, stopped within `grace`."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}

    async def start() -> asyncio.subprocess.Process:
        setup = spawn.child_setup(
            uid=who.uid if who.dropped else None, gid=who.gid if who.dropped else None, umask=0o077
        )
        return await spawn.start(argv, env=env, cwd=home, setup=setup)

    policy = dataclasses.replace(C.Policy(), stop_grace_s=grace)
    return Program(name, start, policy=policy)


async def supervise(
    user: str,
    home: Path,
    programs: Callable[[Account], list[Program]],
    stop: asyncio.Event,
    logger: logging.Logger,
) -> None:
    """Run `programs` (made once `home` is ready, owned by `user`, created
    when missing) under the process toolkit's Supervisor until `stop`."""
    who = ensure_system_user(user)
    private_dir(home, who)
    check_reachable(who.name, who.uid, home)
    sup = Supervisor(logger=logger)
    for p in programs(who):
        sup.add(p)
    await sup.run_until(stop)
