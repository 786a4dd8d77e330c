"""One app's Redis server: its config (pure), process, and admin operations.

Theory of operation: each app gets its own redis-server, in its own
directory, on its own port, run as the service user. Access control is ACL:
the `default` user (what a plain `AUTH password` / REDIS_URL logs in as) has
the app's password and every command except those that would let the app
escape its limits or its server (CONFIG SET of maxmemory, SHUTDOWN, DEBUG,
MODULE, ACL, replication); the `roost-admin` user, whose password only the
daemon knows, may do everything. Persistence is on (AOF every second, plus
RDB snapshots); memory is capped at `maxmemory` (the app's `[redis] memory`,
else the servicehost's default).

Eviction is volatile-lru: when full, Redis drops the least recently used of
the keys that carry a TTL, and refuses writes (OOM) only when none is left.
An app's Redis serves as a cache (Django's cache and sessions set a TTL on
every key), a queue (Celery's lists have none) and a store, all at once;
allkeys-lru would silently drop queued jobs and stored data, which Roost
backs up as data; noeviction would fail every cache write of a full Redis
whose expired-soon keys could simply go. Keys with a TTL are the ones their
app said may vanish.

The config file is rewritten at every start from state.json, so a change of
memory limit survives restarts and every existing server gets the current
policy; a running server is also told at once (CONFIG SET maxmemory).

Backups: a third ACL user, `roost-backup`, may only pull a snapshot (SYNC,
PSYNC, REPLCONF) and PING and INFO: backupd's `redis-cli --rdb`. The
server sends it diskless (`repl-diskless-sync`), so a pull writes nothing
to the servicehost's disk. Snapshots the server writes itself (the `save`
points, AOF rewrites) are turned off while one would not fit on the disk
(snaproom.py) and on again when there is room; the config then says so
too, so a restart keeps them off.

Each server runs detached (detached.py), recording its pid in its pidfile,
and outlives the daemon. A new daemon adopts the one the pidfile names when
that process is redis-server, running in the app's directory as the
service user, on the app's port (its title says it), and, once it answers
the daemon's own password, says it is that pid with this config file (INFO
server): nothing that merely reuses the pid is ever touched. An adopted
server is told the current memory limit; one listening on other addresses
is restarted; one whose snapshots are off stays so until the guard finds
room (snaproom.py).

A server whose directory holds a dump.rdb but no AOF (a restored RDB) is
started with `appendonly no`, so it loads the RDB (with AOF on and no AOF
files, Redis 7 starts empty and would then save that), and turned to
`appendonly yes` before it counts as up, which rewrites the AOF from the
loaded data.

In a cluster each app's Redis is one of a pair, a master and its replica
on the other servicehost, watched by Redis Sentinel: `replication` (set
before each start, from what the sentinels say) adds the pair's lines to
the config (redisrepl.py), and nothing here ever changes a running copy's
role: that is Sentinel's (sentinel.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from roost.servicehost import redisrepl
from roost.servicehost.binaries import Binaries
from roost.servicehost.detached import adoptable, cmdline, launch, retire
from roost.servicehost.names import REDIS_BACKUP_USER
from roost.servicehost.redisrepl import Replication, ReplicationView
from roost.servicehost.resp import RedisAdmin, RedisError, parse_info
from roost.servicehost.state import Service
from roost.servicehost.user import ServiceUser

log = logging.getLogger("roost.servicehost")

ADMIN_USER = "roost-admin"
EVICTION_POLICY = "volatile-lru"  # why: the module docstring
ADMIN_HOST = "127.0.0.1"
STOP_GRACE_S = 30.0
# Commands the app's own user may not run (CONFIG GET stays allowed).
DENIED = (
    "-config", "+config|get", "-shutdown", "-debug", "-module", "-acl",
    "-replicaof", "-slaveof", "-sync", "-psync", "-replconf", "-failover",
)  # fmt: skip
# What backupd's user may run: pull a snapshot, and see the server is there.
BACKUP_ALLOWED = ("+sync", "+psync", "+replconf", "+ping", "+info")
SAVE_POINTS = "3600 1 300 100 60 10000"
AOF_REWRITE_PERCENTAGE = 100
AOF_DIR = "appendonlydir"
PIDFILE = "redis.pid"
AOF_REWRITE_WAIT_S = 600.0
# INFO persistence once an AOF turned on has been written from memory.
AOF_REWRITTEN = (
    ("aof_enabled", "1"),
    ("aof_rewrite_in_progress", "0"),
    ("aof_rewrite_scheduled", "0"),
)


def bind_addresses(hosts: list[str]) -> str:
    """redis.conf `bind` for `addresses.listen_hosts` ("-::*": IPv6 if available)."""
    return "* -::*" if "*" in hosts else " ".join(hosts)


def render_conf(
    svc: Service,
    directory: Path,
    listen: list[str],
    snapshots: bool = True,
    appendonly: bool = True,
    replication: Replication | None = None,
) -> str:
    """redis.conf for one app's server; `snapshots`: whether it may write
    them; `appendonly` False only to load a restored RDB (module docstring);
    `replication`: its place in a pair (redisrepl.py), None on one machine."""
    lines = [
        "# Written by the Roost servicehost at every start; edits here are lost.",
        f"bind {bind_addresses(listen)}",
        f"port {svc.port}",
        # Every user has a password; protected mode would only refuse non-local
        # clients that the ACL already authenticates.
        "protected-mode no",
        "daemonize no",
        f'pidfile "{directory / PIDFILE}"',
        'logfile ""',
        f'dir "{directory}"',
        "dbfilename dump.rdb",
        f"appendonly {'yes' if appendonly else 'no'}",
        "appendfsync everysec",
        f'save "{SAVE_POINTS if snapshots else ""}"',
        f"auto-aof-rewrite-percentage {AOF_REWRITE_PERCENTAGE if snapshots else 0}",
        # Backups pull over the socket: nothing written here for them, and
        # no wait for more replicas to share the transfer.
        "repl-diskless-sync yes",
        "repl-diskless-sync-delay 0",
        f"maxmemory {max(svc.memory_mb, 1)}mb",
        f"maxmemory-policy {EVICTION_POLICY}",
        f"user default on >{svc.password} ~* &* +@all {' '.join(DENIED)}",
        f"user {ADMIN_USER} on >{svc.admin_password} ~* &* +@all",
    ]
    if svc.backup_password:
        lines.append(
            f"user {REDIS_BACKUP_USER} on >{svc.backup_password} resetkeys resetchannels -@all "
            + " ".join(BACKUP_ALLOWED)
        )
    if replication is not None:
        lines += redisrepl.conf_lines(replication, svc.port)
    return "\n".join(lines) + "\n"


def check_served(info: dict[str, str], pid: int, conf: Path, port: int) -> None:
    """RedisError unless INFO server says process `pid` serves with `conf`:
    what answers on the port is the process the record names."""
    served = (info.get("process_id", ""), os.path.realpath(info.get("config_file", "")))
    if served != (str(pid), os.path.realpath(conf)):
        raise RedisError(
            f"port {port} is served by pid {served[0]} with {served[1]!r}, "
            f"not by pid {pid} with {conf}"
        )


def needs_aof_rebuild(directory: Path) -> bool:
    """A dump.rdb without AOF files beside it: load it, then rewrite the AOF."""
    return (directory / "dump.rdb").is_file() and not (directory / AOF_DIR).is_dir()


class RedisServer:
    # SIGTERM: Redis flushes the AOF (and saves the RDB) and exits.
    stop_signal: int = signal.SIGTERM
    stop_grace_s: float = STOP_GRACE_S

    def __init__(
        self,
        bins: Binaries,
        directory: Path,
        logs: Path,
        user: ServiceUser,
        svc: Service,
        listen: list[str],
    ) -> None:
        self.bins = bins
        self.dir = directory
        self.log_file = logs / f"redis-{svc.app}.log"
        self.user = user
        self.svc = svc
        self.listen = listen
        self.name = f"redis[{svc.app}]"
        # Why its snapshots are off ("" while they are on): snaproom.py.
        self.snapshot_problem = ""
        self._rebuild_aof = False
        # Its place in a pair (set before each start: the master may have
        # moved meanwhile); None on one machine.
        self.replication: Replication | None = None
        # Run before each launch (redispairs.py: the role the sentinels agree on).
        self.before_launch: Callable[[], Awaitable[None]] | None = None

    @property
    def conf_path(self) -> Path:
        return self.dir / "redis.conf"

    def prepare(self) -> None:
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self._rebuild_aof = needs_aof_rebuild(self.dir)
        tmp = self.dir / "redis.conf.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            conf = render_conf(
                self.svc, self.dir, self.listen,
                snapshots=not self.snapshot_problem, appendonly=not self._rebuild_aof,
                replication=self.replication,
            )  # fmt: skip
            fh.write(conf)
        os.replace(tmp, self.conf_path)
        self.user.chown_tree(self.dir)

    def admin(self, timeout: float = 5.0) -> RedisAdmin:
        return RedisAdmin(ADMIN_HOST, self.svc.port, ADMIN_USER, self.svc.admin_password, timeout)

    # ------------------------------------------------------------ Server protocol

    async def find(self) -> int | None:
        """The server an earlier daemon left in this directory, or None (module docstring)."""
        try:
            pid = int((self.dir / PIDFILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        exe = str(self.bins.redis_server)
        why = await asyncio.to_thread(adoptable, pid, exe, self.dir, self.user.run_uid)
        if why:
            log.info("%s: not adopting the pid its pidfile names: %s", self.name, why)
            return None
        # Its title ("redis-server 127.0.0.1:PORT") is written over its argv.
        title = " ".join(await asyncio.to_thread(cmdline, pid)).split()
        if not any(word.endswith(f":{self.svc.port}") for word in title[1:]):
            log.info(
                "%s: the running server (pid %d) has another port: restarting it", self.name, pid
            )
            await retire(pid, self.stop_signal, self.stop_grace_s)
            return None
        self.prepare()  # the config as this daemon means it, for its next start
        return pid

    async def launch(self) -> int:
        if self.before_launch is not None:
            await self.before_launch()
        self.prepare()
        argv = [str(self.bins.redis_server), str(self.conf_path)]
        return await launch(argv, self.user, self.log_file, self.dir)

    async def wait_ready(self, pid: int, adopted: bool) -> None:
        while True:
            try:
                async with self.admin(timeout=2.0) as r:
                    if await r.call("PING") == "PONG":
                        info = parse_info(await r.call("INFO", "server"))
                        break
            except (OSError, RedisError, TimeoutError, asyncio.IncompleteReadError):
                pass  # not listening yet, or -LOADING the AOF
            await asyncio.sleep(0.05)
        check_served(info, pid, self.conf_path, self.svc.port)
        if adopted:
            await self._reconcile()
        if self._rebuild_aof:
            await self._rebuild()

    async def _reconcile(self) -> None:
        """An adopted server brought to what this daemon means (module docstring)."""
        want = bind_addresses(self.listen)
        async with self.admin() as r:
            bind = (await r.call("CONFIG", "GET", "bind"))[1]
            if bind != want:
                raise RedisError(f"it listens on {bind!r}, not {want!r}: restarting it")
            await r.call("CONFIG", "SET", "maxmemory", f"{max(self.svc.memory_mb, 1)}mb")
            save = (await r.call("CONFIG", "GET", "save"))[1]
        if not save:
            self.snapshot_problem = "snapshots off, as the servicehost before this one left them"
            self.prepare()

    async def _rebuild(self) -> None:
        """The RDB is loaded: turn the AOF on (Redis rewrites it from the data
        in memory) and wait until it is on disk, when the conf may say so."""
        async with self.admin(timeout=AOF_REWRITE_WAIT_S) as r:
            await r.call("CONFIG", "SET", "appendonly", "yes")
            while True:
                info = parse_info(await r.call("INFO", "persistence"))
                if all(info.get(k) == v for k, v in AOF_REWRITTEN):
                    break
                await asyncio.sleep(0.05)
            if info.get("aof_last_bgrewrite_status") != "ok":
                raise RedisError(f"the AOF of {self.svc.app} could not be rebuilt from its RDB")
        self._rebuild_aof = False
        self.prepare()  # appendonly yes from now on

    async def set_snapshots(self, problem: str) -> None:
        """Snapshots off, saying why (`problem`), or on again ("")."""
        on = not problem
        async with self.admin() as r:
            await r.call("CONFIG", "SET", "save", SAVE_POINTS if on else "")
            await r.call(
                "CONFIG", "SET", "auto-aof-rewrite-percentage",
                str(AOF_REWRITE_PERCENTAGE if on else 0),
            )  # fmt: skip
        self.snapshot_problem = problem
        self.prepare()  # a restart keeps it so

    # ------------------------------------------------------------ admin

    async def set_memory(self, memory_mb: int) -> None:
        async with self.admin() as r:
            await r.call("CONFIG", "SET", "maxmemory", f"{max(memory_mb, 1)}mb")

    async def memory(self, timeout: float = 2.0) -> tuple[int, int, str]:
        """(maxmemory, used_memory, maxmemory-policy) as the server reports them now."""
        async with self.admin(timeout) as r:
            info = parse_info(await r.call("INFO", "memory"))
        return int(info["maxmemory"]), int(info["used_memory"]), info["maxmemory_policy"]

    async def replication_view(self, timeout: float = 2.0) -> ReplicationView:
        """Its INFO replication now: its role, offsets and replicas."""
        async with self.admin(timeout) as r:
            return redisrepl.read_view(parse_info(await r.call("INFO", "replication")))

    async def save(self, timeout: float = 600.0) -> None:
        """SAVE: a complete dump.rdb of the data as of now (blocks the server meanwhile)."""
        async with self.admin() as r:
            await r.call("SAVE", timeout=timeout)

    async def copy_rdb(self, dest: Path) -> int:
        """Copy the server's dump.rdb to `dest` atomically; its size."""
        tmp = dest.with_name(dest.name + ".partial")
        await asyncio.to_thread(shutil.copyfile, self.dir / "dump.rdb", tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
        return dest.stat().st_size
