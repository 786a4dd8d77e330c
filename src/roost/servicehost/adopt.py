"""ServiceHostRestore: a fresh servicehost takes on the services of one that
lost its data, so every app keeps the credentials the controller holds.

Theory of operation. backupd sends the lost servicehost's state.json (from a
platform backup; no repository credential ever comes here) and a restore id.
This servicehost must hold no app's service: otherwise the request is
refused and nothing changes (unless its services came from this same restore
id: the request is a repeat, and finishes the job). Whatever can be refused
is refused before anything changes (`plan`, pure): a state that does not
read, a bad name or password, ports that clash, a PostgreSQL port that
ROOST_POSTGRES_PORT fixes elsewhere, a port another program holds, a full
disk. Then, as a provision does, the services are recorded first
(state.json, with the restore id) and made after, each step idempotent, so
a repeat after a timeout or a crash half-way finishes the job:

  PostgreSQL  moved onto the recorded port (restarted) when it differs;
              each app's role with its recorded password and an empty
              database (rebuild.ensure_databases, which `roost restore`'s
              offline rebuild uses too); the backup role with the recorded
              password (backupd's Barman configuration stays valid).
  Redis       each app's server on its recorded port with its recorded
              passwords (the app's, the daemon's, the backup user's), empty.
  S3          the S3 server on its recorded ports with its recorded keys
              (the servicehost's own, each app's, the revoked ones), each
              app's bucket made, empty (s3.py's provision).
  S3 in a     (the state has buckets and no S3 server: they were made in
  cluster     the shared tree through the gateways, s3cluster.py) each
              bucket taken on as a record: nothing is made here and no
              server started; the bucket and the app's identity were not
              lost with the servicehost (the tree keeps two copies, the
              filers' /etc/iam the identity), so they are only checked
              there, the identity put again if it is missing (ClusterBuckets
              .take_on), no object touched. backupd restores no objects
              over them (hostrestore.py). Only a servicehost whose cluster
              runs gateways takes such a state on, and one with gateways
              takes on no state of a one-machine S3 server (moving its
              buckets into the tree is not done).

This servicehost keeps its own superuser and password: nothing outside it
uses them. The data comes after, from backupd, through the restore requests
every restore uses (restores.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import socket
from dataclasses import dataclass

from roost.datadir import s3plan
from roost.servicehost import pgdemand
from roost.servicehost.backupsource import ready_backup_role
from roost.servicehost.host import ServiceError, ServiceHost
from roost.servicehost.names import BadName, check_app, check_restore_id, new_password, pg_name
from roost.servicehost.rebuild import RebuildError, ensure_databases, read_state
from roost.servicehost.s3 import ServiceProblem, identity_file
from roost.servicehost.state import HostState, S3Node, Service
from roost.wire.dispatch import Entry, on, refusing
from roost.wire.messages import Msg, ServiceHostRestore, ServiceHostRestored

log = logging.getLogger("roost.servicehost")

# What new_password makes (URL-safe): a password goes into URLs and Redis's
# ACL lines as it is, so nothing else is taken on.
_PASSWORD = re.compile(r"^[A-Za-z0-9_-]{16,200}$")


class AdoptError(Exception):
    """A host restore refused; nothing was changed by it."""


@dataclass(frozen=True)
class Plan:
    """What this servicehost takes on (pure `plan`'s answer)."""

    services: dict[str, Service]
    pg_port: int  # PostgreSQL's port from now on
    backup_password: str  # the backup role's ("" keeps this host's own)
    # Ports that must be free first (another program on one: refused)
    ports: tuple[int, ...]
    # The lost host's S3 server (its ports, its own key, revoked keys) when
    # some app had a bucket there
    s3: S3Node | None = None
    # Its buckets were in the cluster's shared tree (no S3 server of its own)
    cluster_buckets: bool = False


def plan(
    old: HostState, mine: HostState, fixed_port: int, default_memory_mb: int,
    gateway_port: int = 0,
) -> Plan:  # fmt: skip
    """What to take on of `old` (the lost servicehost's state) onto `mine`
    (this one's, holding no app's service), or AdoptError saying why not.
    `fixed_port`: ROOST_POSTGRES_PORT (0: none); `gateway_port`: this
    host's S3 gateway's when its cluster serves buckets (0: it does not).
    Pure, but for the passwords it makes when a Redis's own are missing."""
    if mine.postgres is None:
        raise AdoptError("this servicehost has no PostgreSQL cluster yet: start it first")
    if not old.services:
        raise AdoptError("the servicehost's state holds no app's service: nothing to take on")
    pg_port, backup_password = mine.postgres.port, ""
    has_pg = any(s.kind == "postgres" for s in old.services.values())
    if has_pg:
        if old.postgres is None:
            raise AdoptError("the state has databases but no PostgreSQL cluster")
        pg_port, backup_password = old.postgres.port, old.postgres.backup_password
        if fixed_port and fixed_port != pg_port:
            raise AdoptError(
                f"ROOST_POSTGRES_PORT fixes this servicehost's PostgreSQL on port {fixed_port}, "
                f"and the apps' credentials name port {pg_port}: set it to {pg_port} (or unset "
                "it) and restart the servicehost"
            )
        if backup_password and not _PASSWORD.match(backup_password):
            raise AdoptError("the backup role's password is not one Roost makes")
    in_tree = _has_s3(old.services) and old.s3 is None
    if in_tree and not gateway_port:
        raise AdoptError(
            "the state's buckets were in a cluster's shared tree (it has no S3 server of its "
            "own), and this servicehost's cluster runs no S3 gateways to serve them: restore it "
            "onto a servicehost of that cluster; nothing was changed"
        )
    if old.s3 is not None and _has_s3(old.services) and gateway_port:
        raise AdoptError(
            "the state's buckets were on an S3 server of its own, and this servicehost's "
            "cluster serves buckets through its gateways (moving them into the shared tree is "
            "not done); nothing was changed"
        )
    bucket_port = gateway_port if in_tree else old.s3.ports.s3 if old.s3 is not None else 0
    services = {
        key: _bucket(key, svc, bucket_port) if svc.kind == "s3" else
        _service(key, svc, pg_port, default_memory_mb)
        for key, svc in old.services.items()
    }  # fmt: skip
    redis_ports = [s.port for s in services.values() if s.kind == "redis"]
    # The S3 server's: its gateway's is every bucket's endpoint.
    s3_ports = old.s3.ports.all() if old.s3 is not None and _has_s3(services) else []
    own = redis_ports + s3_ports + ([pg_port] if has_pg else [])
    if len(set(own)) != len(own):
        raise AdoptError("the state gives two services the same port")
    # This host's own PostgreSQL port is free once it moves.
    moving = pg_port != mine.postgres.port
    ports = ([pg_port] if moving else []) + [
        p for p in redis_ports + s3_ports if not (moving and p == mine.postgres.port)
    ]
    s3 = old.s3 if s3_ports else None
    if s3 is not None:
        _check_keys(s3, [s for s in services.values() if s.kind == "s3"])
    if in_tree:
        _check_tree_keys([s for s in services.values() if s.kind == "s3"])
    return Plan(services, pg_port, backup_password, tuple(sorted(ports)), s3, in_tree)


def _check_keys(node: S3Node, buckets: list[Service]) -> None:
    """The gateway's identity file takes every key as the lost host made
    them (tokens, none twice: s3plan.identities), or AdoptError."""
    try:
        identity_file(node, buckets)
    except ValueError as exc:
        raise AdoptError(f"the S3 server's keys: {exc}") from None


def _check_tree_keys(buckets: list[Service]) -> None:
    """Each key as the filers' /etc/iam takes it (tokens, none twice), or
    AdoptError: the identity may have to be put again (take_on)."""
    seen: set[str] = set()
    for svc in buckets:
        try:
            s3plan.check_key(s3plan.Key(svc.app, svc.username, svc.password, svc.database))
        except ValueError as exc:
            raise AdoptError(f"{svc.app}'s bucket key: {exc}") from None
        if svc.username in seen:
            raise AdoptError(f"{svc.app}'s bucket key is another app's too")
        seen.add(svc.username)


def _has_s3(services: dict[str, Service]) -> bool:
    return any(s.kind == "s3" for s in services.values())


def _bucket(key: str, svc: Service, port: int) -> Service:
    """An app's bucket and key as the lost servicehost gave them, served on
    `port` (its S3 server's, or the cluster's gateways'). One machine's
    objects come after, from backupd, with the app's data directory; a
    cluster's are in the shared tree still."""
    try:
        check_app(svc.app)
        bucket = s3plan.bucket_name(svc.app)
    except (BadName, ValueError) as exc:
        raise AdoptError(f"{svc.app}'s bucket: {exc}") from None
    if key != HostState.key(svc.app, "s3") or svc.database != bucket:
        raise AdoptError(f"{svc.app}'s bucket must be named {bucket}")
    if svc.port != port:
        raise AdoptError(f"{svc.app}'s bucket is not on the S3 server's port ({port})")
    return Service(
        app=svc.app, kind="s3", port=svc.port, database=bucket, username=svc.username,
        password=svc.password,
    )  # fmt: skip


def _service(key: str, svc: Service, pg_port: int, default_memory_mb: int) -> Service:
    """One service of the lost state as this host records it, or AdoptError."""
    try:
        check_app(svc.app)
    except BadName as exc:
        raise AdoptError(str(exc)) from None
    if key != HostState.key(svc.app, svc.kind):
        raise AdoptError(f"the state's entry {key!r} is not {svc.app}'s {svc.kind}")
    extra = [svc.admin_password, svc.backup_password] if svc.kind == "redis" else []
    if not all(_PASSWORD.match(w) for w in [svc.password, *filter(None, extra)]):
        raise AdoptError(f"{svc.app}'s {svc.kind} has a password that is not one Roost makes")
    if svc.kind == "postgres":
        name = pg_name(svc.app)
        if svc.database != name or svc.username != name:
            raise AdoptError(f"{svc.app}'s database and role must be named {name}")
        return Service(
            app=svc.app, kind="postgres", port=pg_port, database=name, username=name,
            password=svc.password,
        )  # fmt: skip
    if not 1024 <= svc.port <= 65535:
        raise AdoptError(f"{svc.app}'s Redis port {svc.port} is not one Roost uses")
    # A daemon's or backup user's password missing (a state older than
    # them) is made, as a start makes it: neither is the app's.
    return Service(
        app=svc.app, kind="redis", port=svc.port, password=svc.password,
        memory_mb=svc.memory_mb if svc.memory_mb >= 1 else default_memory_mb,
        admin_password=svc.admin_password or new_password(),
        backup_password=svc.backup_password or new_password(),
    )  # fmt: skip


def port_taken(port: int) -> bool:
    """Whether a program listens on `port` (any address) now. Blocking, brief."""
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((addr, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            # (no IPv6 on this host: nothing can listen there)
    return False


class Adoption:
    def __init__(self, host: ServiceHost) -> None:
        self.host = host
        self._lock = asyncio.Lock()

    def entries(self) -> list[Entry]:
        return [
            on(
                ServiceHostRestore,
                refusing(self.adopt, AdoptError, ServiceError, ServiceProblem, BadName),
            )
        ]

    async def adopt(self, msg: ServiceHostRestore) -> Msg:
        check_restore_id(msg.restore_id)
        host = self.host
        async with self._lock:
            held = sorted(f"{s.app} ({s.kind})" for s in host.state.services.values())
            if held and host.state.adopted != msg.restore_id:
                shown = ", ".join(held[:5]) + (
                    f" and {len(held) - 5} more" if len(held) > 5 else ""
                )
                raise AdoptError(
                    f"servicehost {host.name} holds services already ({shown}): a host restore "
                    "goes onto a fresh servicehost only; nothing was changed"
                )
            if not held:
                await self._record(msg)
            return await self._finish(msg.restore_id)

    async def _record(self, msg: ServiceHostRestore) -> None:
        """Everything checked, then the services recorded (nothing made yet)."""
        host = self.host
        try:
            old = read_state(msg.state_json)
        except RebuildError as exc:
            raise AdoptError(str(exc)) from None
        s = host.settings
        cluster_s3 = host.s3.cluster
        gateway_port = cluster_s3.gw.gateway.port if cluster_s3 is not None else 0
        p = plan(old, host.state, s.postgres_port, s.redis_memory_mb, gateway_port)
        taken = [port for port in p.ports if await asyncio.to_thread(port_taken, port)]
        if taken:
            raise AdoptError(
                f"port(s) {', '.join(map(str, taken))}, which the apps' credentials name, are "
                "held by another program on this host: stop it; nothing was changed"
            )
        host.check_disk()
        if host.state.services:  # (provisioned while the ports were checked)
            raise AdoptError(f"servicehost {host.name} holds services now; nothing was changed")
        cluster = host.state.postgres
        assert cluster is not None  # (plan says so)
        host.state.services = dict(p.services)
        cluster.port = p.pg_port
        if p.backup_password:
            cluster.backup_password = p.backup_password
        if p.s3 is not None:
            host.state.s3 = p.s3
        host.state.adopted = msg.restore_id
        host.save()
        log.info(
            "host restore %s: took on %d services (PostgreSQL on port %d)",
            msg.restore_id, len(p.services), p.pg_port,
        )  # fmt: skip

    async def _finish(self, restore_id: str) -> Msg:
        """Make what state.json records (idempotent: also a repeat's)."""
        host = self.host
        pg, cluster = host.pg, host.state.postgres
        assert pg is not None and cluster is not None, "the servicehost has started"
        if host.pg_started and pg.spawned_port != cluster.port:
            log.info("host restore %s: PostgreSQL moves to port %d", restore_id, cluster.port)
            await host.restart_postgres()
        # Started as the lost host's was (pgdemand.py): for its databases, or
        # because backupd streamed it; otherwise not at all.
        if host.pg_started or pgdemand.needed_at_start(host.state, "on-demand", False):
            pg = await host.pg_up()
            await ensure_databases(
                pg, host.state.of_kind("postgres"), host.settings.postgres_connection_limit
            )
            await ready_backup_role(host, pg)
            await pg.refresh_hba()
        for svc in sorted(host.state.of_kind("redis"), key=lambda s: s.app):
            if svc.app not in host.redis:
                host.start_redis(svc)
        for svc in host.state.of_kind("redis"):
            await host.redis_up(svc.app)
        cluster_s3 = host.s3.cluster
        for svc in sorted(host.state.of_kind("s3"), key=lambda s: s.app):
            if cluster_s3 is not None:
                await cluster_s3.take_on(svc)  # in the shared tree still: checked, kept
            else:
                await host.s3.provision(svc.app)  # the server, the key, the bucket (empty)
        done = ServiceHostRestored(
            postgres=sorted(s.app for s in host.state.of_kind("postgres")),
            redis=sorted(s.app for s in host.state.of_kind("redis")),
            buckets=sorted(s.app for s in host.state.of_kind("s3")),
        )
        log.info(
            "host restore %s: databases of %s and Redis of %s ready (empty)",
            restore_id, done.postgres, done.redis,
        )  # fmt: skip
        return done
