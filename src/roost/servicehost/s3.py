"""Each app's S3 bucket on one machine: one `weed server -s3` for them all.

(In a cluster whose plan runs S3 gateways, a servicehost with no server of
its own makes buckets in the shared tree instead: `S3Buckets` hands each
request to s3cluster.py. The requests, their locks and answers are the
same.)

Theory of operation (the plan, pure, is roost.datadir.s3plan). state.json
records the server (`HostState.s3`: its ports and the servicehost's own
Admin key) and each app's bucket as a Service of kind "s3" (database: the
bucket, username/password: the app's access and secret key, port: the
gateway's). The server runs only while some app has a bucket: the first
provision starts it (and `start()` at the daemon's start, if any), the last
removal stops it. Every change of the set of keys rewrites the gateway's
identity file whole (0600, the service user's; temp file and rename) and
sends the server SIGHUP, which makes the gateway read it again; nothing in
the file is ever edited. The data lives under DATA/servicehost/s3/data.

Requests, each idempotent as the other services' (host.py):
  provision:  record the key (state.json), write the file, start the server
              or HUP it, then make the bucket (the filer's mkdir, a no-op
              when it is there). Asking again answers the same key.
  removal:    a final backup of every object (a tar.gz through the filer's
              HTTP API, beside the other services' final backups), then the
              key is revoked (kept in the file with no action and a new
              secret, HUP: a HUP never forgets a key, s3plan.py), then the
              bucket is deleted with its objects.

The filer's and master's ports are reached by the servicehost alone: apps'
processes may connect only to the gateway's port (the runners' firewall
lets an app reach the host:port of its own credentials, never others).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from roost.datadir import s3cluster, s3plan, weednode
from roost.datadir.seaweed import weed_binary
from roost.servicehost.detached import adoptable, cmdline, launch
from roost.servicehost.names import check_app
from roost.servicehost.s3cluster import ClusterBuckets
from roost.servicehost.s3filer import (
    KEY_WAIT_S,
    S3Problem,
    ServiceProblem,
    archive_to,
    delete_bucket,
    final_backup,
    get,
    key_opens,
    make_bucket,
    new_key,
    new_secret,
    walk,
)
from roost.servicehost.state import S3Node, S3Revoked, Service
from roost.servicehost.supervised import Supervised
from roost.wire.dispatch import Entry, on, refusing
from roost.wire.messages import (
    BucketCredentials,
    BucketDeprovision,
    BucketProvision,
    BucketRemoved,
    Msg,
)

if TYPE_CHECKING:
    from roost.servicehost.host import ServiceHost

log = logging.getLogger("roost.servicehost")

# On SIGTERM the volume server closes its volumes within milliseconds, then
# the filer's gRPC GracefulStop waits out the gateway's metadata stream
# (in the same process, not yet closed): 17 s measured, twice. Past this,
# SIGKILL: what is left open is the filer's LevelDB, whose journal replays.
STOP_GRACE_S = 3.0
UP_WAIT_S = 30.0  # how long a request waits for a (re)starting server
PIDFILE = "weed.pid"
__all__ = ["S3Buckets", "S3Problem", "S3Server", "ServiceProblem", "identity_file"]


class S3Server:
    """The one `weed server` (supervised.Server)."""

    stop_signal: int = signal.SIGTERM
    stop_grace_s: float = STOP_GRACE_S
    name = "s3"
    buckets_dir = s3plan.BUCKETS_DIR

    def __init__(self, host: ServiceHost, node: S3Node) -> None:
        self.host = host
        self.node = node
        self.dir = host.layout.root / "s3"
        self.log_file = host.layout.logs / "s3.log"
        self.ip = _ip(host)

    @property
    def config(self) -> Path:
        return self.dir / "identities.json"

    def argv(self) -> list[str]:
        return s3plan.server_argv(weed_binary(), self.dir, self.ip, self.node.ports, self.config)

    def filer(self) -> str:
        return f"http://{self.ip}:{self.node.ports.filer}"

    def write_config(self) -> None:
        """The gateway's identity file from state.json (module docstring)."""
        text = s3plan.render(identity_file(self.node, self.host.state.of_kind("s3")))
        for d in (self.dir, self.dir / "data", self.dir / "log"):
            d.mkdir(mode=0o700, exist_ok=True)
        tmp = self.config.with_name("identities.json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, self.config)
        user = self.host.user
        if user.dropped:  # what the server reads and writes is the service user's
            # (not the whole tree: weed's own files under data/ and log/ are its already)
            for path in (self.dir, self.dir / "data", self.dir / "log", self.config):
                os.chown(path, user.uid, user.gid)

    # ------------------------------------------------------------ Server protocol

    async def find(self) -> int | None:
        try:
            pid = int((self.dir / PIDFILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        why = await asyncio.to_thread(
            adoptable, pid, weed_binary(), self.dir, self.host.user.run_uid
        )
        if why or await asyncio.to_thread(cmdline, pid) != self.argv():
            return None
        self.write_config()
        os.kill(pid, signal.SIGHUP)  # the keys as state.json has them now
        return pid

    async def launch(self) -> int:
        self.write_config()
        await asyncio.to_thread(_clear_stale, s3plan.grpc_sockets(self.node.ports))
        pid = await launch(self.argv(), self.host.user, self.log_file, self.dir)
        (self.dir / PIDFILE).write_text(f"{pid}\n")
        return pid

    async def wait_ready(self, pid: int, adopted: bool) -> None:
        """Once the filer lists /buckets, the gateway answers HTTP and the
        master knows the volume server's volumes (s3plan.volumes_known)."""
        while True:
            try:
                await asyncio.to_thread(get, f"{self.filer()}{s3plan.BUCKETS_DIR}/", True, True)
                await asyncio.to_thread(get, f"http://{self.ip}:{self.node.ports.s3}/", False)
                if await asyncio.to_thread(self._volumes_known):
                    return
            except (OSError, S3Problem, ValueError):
                pass
            await asyncio.sleep(0.2)

    def _volumes_known(self) -> bool:
        p = self.node.ports
        volume = json.loads(get(f"http://{self.ip}:{p.volume}/status", True))
        master = json.loads(get(f"http://{self.ip}:{p.master}/dir/status", True))
        return s3plan.volumes_known(volume, master, f"{self.ip}:{p.volume}")

    # ------------------------------------------------------------ buckets

    def reload(self, pid: int) -> None:
        """The gateway reads the identity file again (SIGHUP)."""
        self.write_config()
        if pid:
            os.kill(pid, signal.SIGHUP)

    async def opens(self, svc: Service, secret: str, want: bool, timeout: float) -> bool:
        """Whether the app's key with `secret` opens its bucket (`want`) or
        is refused (not `want`) within `timeout` (`key_opens`)."""
        at = f"{self.ip}:{self.node.ports.s3}"
        return await key_opens(at, svc.database, svc.username, secret, want, timeout)

    async def make_bucket(self, bucket: str) -> None:
        await make_bucket(self.filer(), f"{self.buckets_dir}/{bucket}")

    async def delete_bucket(self, bucket: str) -> None:
        await delete_bucket(self.filer(), f"{self.buckets_dir}/{bucket}")

    async def archive(self, bucket: str, dest: Path) -> int:
        """Every object of the bucket into a tar.gz at `dest` (0600); its size."""
        top = f"{self.buckets_dir}/{bucket}"
        return await asyncio.to_thread(archive_to, self.filer(), top, dest)

    def walk(self, directory: str) -> Iterator[tuple[str, int]]:
        """(path, size) of every file under `directory` on the filer."""
        return walk(self.filer(), directory)


def identity_file(node: S3Node, buckets: Iterable[Service]) -> dict[str, object]:
    """The gateway's identity document for these buckets' keys (the
    servicehost's own, each app's, the revoked ones); ValueError when one
    is not a token or two are one (s3plan.identities). A host restore
    (adopt.py) checks a lost host's keys with it before taking them on."""
    admin = s3plan.Key(s3plan.ADMIN_NAME, node.admin_key, node.admin_secret)
    keys = [
        s3plan.Key(s3plan.identity_name(s.app, s.username), s.username, s.password, s.database)
        for s in buckets
    ]
    revoked = [s3plan.Key(r.name, r.access_key, r.secret) for r in node.revoked]
    return s3plan.identities(admin, keys, revoked)


def _clear_stale(paths: list[Path]) -> None:
    """Remove each socket no process answers on (a killed weed's): connect
    refused. One that answers is left (its port is in use: this start
    fails on the TCP port anyway, and the supervisor says so)."""
    for path in paths:
        if not path.is_socket():
            continue
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(path))
            except ConnectionRefusedError:
                path.unlink(missing_ok=True)
                log.info("removed %s, left by a weed that was killed", path)
            except OSError:
                pass


def _ip(host: ServiceHost) -> str:
    """Where the server listens: the address apps are given (loopback on one machine)."""
    return "127.0.0.1" if host.host in ("localhost", "") else host.host


class S3Buckets:
    """The servicehost's S3 requests (module docstring); `host` holds the
    locks, state.json and the supervisor."""

    def __init__(self, host: ServiceHost) -> None:
        self.host = host
        self.server: S3Server | None = None
        self.sup: Supervised | None = None
        # Removals done: app -> its final backup, for a repeated request.
        self.removed: dict[str, str] = {}
        # A cluster whose gateways serve buckets (s3cluster.py), unless this
        # servicehost serves some from its own server already: those stay
        # there (moving them into the shared tree is not done).
        gateways = s3cluster.of_plan(weednode.load(host.layout.data_dir))
        self.cluster = (
            ClusterBuckets(gateways, host.state, host.save)
            if gateways is not None and host.state.s3 is None
            else None
        )

    def entries(self, errors: tuple[type[Exception], ...]) -> list[Entry]:
        """The bucket requests, each under the app's s3 lock (host.lock)."""

        async def provision(msg: BucketProvision) -> Msg:
            check_app(msg.app)
            async with self.host.lock(msg.app, "s3"):
                self.removed.pop(msg.app, None)
                return self.credentials(await self.provision(msg.app))

        async def remove(msg: BucketDeprovision) -> Msg:
            app = check_app(msg.app)
            async with self.host.lock(app, "s3"):
                dest = self.host.backup_path(app, "s3")
                if not await self.remove(app, dest):
                    return BucketRemoved(app=app, backup_path=self.removed.get(app, ""))
                self.removed[app] = str(dest)
                return BucketRemoved(app=app, backup_path=str(dest))

        return [
            on(BucketProvision, refusing(provision, *errors)),
            on(BucketDeprovision, refusing(remove, *errors)),
        ]

    def start(self) -> None:
        """At the daemon's start: the server, when some app has a bucket."""
        if self.cluster is None and self.host.state.of_kind("s3"):
            self._run()

    async def store(self) -> S3Server | ClusterBuckets:
        """Where the buckets' objects are read and written (backups)."""
        if self.cluster is not None:
            return self.cluster
        server, _ = await self._up()
        return server

    def _node(self) -> S3Node:
        state = self.host.state
        if state.s3 is None:
            taken = {s.port for s in state.services.values()}
            if state.postgres is not None:
                taken.add(state.postgres.port)
            # (host.py imports this module: its port picker is taken late.)
            from roost.servicehost.host import free_port

            ports: list[int] = []
            for _ in range(8):
                ports.append(free_port(_ip(self.host), taken | set(ports)))
            state.s3 = S3Node(
                ports=s3plan.Ports(*ports), admin_key=new_key(), admin_secret=new_secret()
            )
            self.host.save()
        return state.s3

    def _run(self) -> tuple[S3Server, Supervised]:
        if self.server is None or self.sup is None:
            self.server = S3Server(self.host, self._node())
            self.sup = self.host.supervise(self.server)
        return self.server, self.sup

    async def _up(self) -> tuple[S3Server, Supervised]:
        server, sup = self._run()
        if not await sup.wait_up(UP_WAIT_S):
            last = f": {sup.last_error}" if sup.last_error else ""
            raise ServiceProblem(f"the S3 server is not up ({sup.state}{last})", True)
        return server, sup

    def credentials(self, svc: Service) -> BucketCredentials:
        """What the app is given: its bucket, its key, the endpoint."""
        if self.cluster is not None:
            return self.cluster.credentials(svc)
        return BucketCredentials(
            app=svc.app, host=self.host.host, port=svc.port, bucket=svc.database,
            access_key=svc.username, secret_key=svc.password,
            url=s3plan.endpoint_url(self.host.host, svc.port),
        )  # fmt: skip

    async def provision(self, app: str) -> Service:
        try:
            bucket = s3plan.bucket_name(app)
        except s3plan.BadBucketName as exc:
            raise ServiceProblem(str(exc)) from None
        owners = {s.database: s.app for s in self.host.state.of_kind("s3")}
        other = s3plan.taken_by(bucket, app, owners)
        if other:
            raise ServiceProblem(f"app {app!r} would share bucket {bucket} with app {other!r}")
        if self.cluster is not None:
            return await self.cluster.provision(app, bucket)
        key = self.host.state.key(app, "s3")
        svc = self.host.state.services.get(key)
        if svc is None:
            self.host.check_disk()
            node = self._node()
            svc = Service(
                app=app, kind="s3", port=node.ports.s3, database=bucket,
                username=new_key(), password=new_secret(),
            )  # fmt: skip
            self.host.state.services[key] = svc
            self.host.save()
        fresh = self.server is None
        server, sup = self._run()
        if not fresh and sup.pid:
            server.reload(sup.pid)  # a running gateway learns the new key
        server, _ = await self._up()
        try:
            await server.make_bucket(bucket)
        except (OSError, S3Problem) as exc:
            raise ServiceProblem(f"could not make bucket {bucket}: {exc}", True) from None
        if not await server.opens(svc, svc.password, True, KEY_WAIT_S):
            raise ServiceProblem(f"the S3 gateway does not take {app}'s new key yet", True)
        log.info("s3 for %s: bucket %s ready", app, bucket)
        return svc

    async def remove(self, app: str, dest: Path) -> bool:
        """Final backup to `dest`, the key dropped, the bucket deleted; the
        server stopped when no bucket is left. False: no bucket here."""
        if self.cluster is not None:
            return await self.cluster.remove(app, dest)
        svc = self.host.state.get(app, "s3")
        if svc is None:
            return False
        server, sup = await self._up()
        await final_backup(app, svc.database, dest, server.archive)
        self.host.state.services.pop(self.host.state.key(app, "s3"), None)
        name = s3plan.identity_name(app, svc.username)
        node = self._node()
        node.revoked.append(S3Revoked(name=name, access_key=svc.username, secret=new_secret()))
        self.host.save()
        server.reload(sup.pid)  # its key stops opening anything now
        if not await server.opens(svc, svc.password, False, KEY_WAIT_S):
            # Never seen (the HUP is measured to take effect at once): a
            # restart reads the file afresh, the other apps wait seconds.
            log.error("%s's revoked key still opens its bucket: restarting the S3 server", app)
            await sup.stop()
            self.server = self.sup = None
            server, sup = await self._up()
        try:
            await server.delete_bucket(svc.database)
        except (OSError, S3Problem) as exc:
            # The key is gone already: the objects are unreachable to the app.
            log.warning("bucket %s of %s was not deleted: %s", svc.database, app, exc)
        if not self.host.state.of_kind("s3"):
            await sup.stop()
            self.server = self.sup = None
            log.info("no app has a bucket any more: the S3 server is stopped")
        return True
