"""A host's Redis Sentinel as a supervised server, and talking to sentinels.

`SentinelServer` is one host's sentinel (`redis-server sentinel.conf
--sentinel`) under the servicehost's supervisor (supervised.py): launched
detached, outliving the daemon, adopted by its pidfile like an app's Redis
(redis.py). Its configuration file is written only when there is none:
Sentinel keeps what it learns there (sentinel.py).

`register`, `unregister` and `ask_master` speak to every sentinel of the
cluster at once; an unreachable one is reported, never waited for past the
timeout: a failover is exactly when one of them is gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterable, Sequence
from pathlib import Path

from roost import aio
from roost.servicehost import sentinel
from roost.servicehost.detached import adoptable, cmdline, launch, retire
from roost.servicehost.redis import check_served
from roost.servicehost.resp import RedisAdmin, RedisError, parse_info
from roost.servicehost.sentinel import Monitor, SentinelSpec
from roost.servicehost.user import ServiceUser

log = logging.getLogger("roost.servicehost")

Address = tuple[str, int]
CALL_TIMEOUT_S = 3.0
STOP_GRACE_S = 10.0
# Sentinel's clients log in as the default user with the sentinel password.
CLIENT_USER = "default"
_ERRORS = (OSError, RedisError, TimeoutError, asyncio.IncompleteReadError)


def client(addr: Address, password: str, timeout: float = CALL_TIMEOUT_S) -> RedisAdmin:
    return RedisAdmin(addr[0], addr[1], CLIENT_USER, password, timeout)


class SentinelServer:
    """This host's sentinel, for `supervised.Servers`."""

    stop_signal: int = signal.SIGTERM
    stop_grace_s: float = STOP_GRACE_S

    def __init__(
        self, redis_server: Path, spec: SentinelSpec, logs: Path, user: ServiceUser
    ) -> None:
        self.redis_server = redis_server
        self.spec = spec
        self.dir = spec.directory
        self.log_file = logs / "sentinel.log"
        self.user = user
        self.name = "sentinel"

    @property
    def conf_path(self) -> Path:
        return self.dir / sentinel.CONF

    @property
    def address(self) -> Address:
        return ("127.0.0.1", self.spec.port)

    def prepare(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.conf_path.exists():
            tmp = self.dir / (sentinel.CONF + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(sentinel.render_conf(self.spec))
            os.replace(tmp, self.conf_path)
        # Sentinel rewrites its file in place and beside it: all of it is its own.
        self.user.chown_tree(self.dir)

    async def find(self) -> int | None:
        """The sentinel an earlier daemon left running here, or None."""
        try:
            pid = int((self.dir / sentinel.PIDFILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        why = await asyncio.to_thread(
            adoptable, pid, str(self.redis_server), self.dir, self.user.run_uid
        )
        if why:
            log.info("sentinel: not adopting the pid its pidfile names: %s", why)
            return None
        title = " ".join(await asyncio.to_thread(cmdline, pid))
        if "[sentinel]" not in title or f":{self.spec.port}" not in title:
            log.info("sentinel: pid %d is not this sentinel (%r): restarting it", pid, title)
            await retire(pid, self.stop_signal, self.stop_grace_s)
            return None
        self.prepare()
        return pid

    async def launch(self) -> int:
        self.prepare()
        argv = [str(self.redis_server), str(self.conf_path), "--sentinel"]
        return await launch(argv, self.user, self.log_file, self.dir)

    async def wait_ready(self, pid: int, adopted: bool) -> None:
        while True:
            try:
                async with client(self.address, self.spec.password, 2.0) as r:
                    info = parse_info(await r.call("INFO", "server"))
                    break
            except _ERRORS:
                pass  # not listening yet
            await asyncio.sleep(0.05)
        check_served(info, pid, self.conf_path, self.spec.port)


# ------------------------------------------------------------------ clients


async def _register_one(
    addr: Address, password: str, monitors: Sequence[Monitor], auth: bool
) -> None:
    async with client(addr, password) as r:
        seen = sentinel.masters_seen(await r.call("SENTINEL", "MASTERS"))
        for cmd in sentinel.plan(monitors, seen, auth):
            await r.call(*cmd)


async def register(
    sentinels: Iterable[Address], password: str, monitors: Sequence[Monitor], auth: bool = True
) -> dict[Address, str]:
    """Make every sentinel watch `monitors` (sentinel.plan; `auth`: set the
    login of those it watches already too); what failed where ({} when
    every sentinel took them)."""
    addrs = list(sentinels)
    results = await asyncio.gather(
        *(
            aio.wait_for(_register_one(a, password, monitors, auth), CALL_TIMEOUT_S * 2)
            for a in addrs
        ),
        return_exceptions=True,
    )
    return {a: str(r) or type(r).__name__ for a, r in zip(addrs, results, strict=True) if r}


async def _forget_one(addr: Address, password: str, name: str) -> None:
    async with client(addr, password) as r:
        try:
            await r.call(*sentinel.forget(name))
        except RedisError as exc:
            if "No such master" not in str(exc):
                raise


async def unregister(sentinels: Iterable[Address], password: str, name: str) -> dict[Address, str]:
    """Make every sentinel forget master `name` (its app's Redis is gone)."""
    addrs = list(sentinels)
    results = await asyncio.gather(
        *(aio.wait_for(_forget_one(a, password, name), CALL_TIMEOUT_S) for a in addrs),
        return_exceptions=True,
    )
    return {a: str(r) or type(r).__name__ for a, r in zip(addrs, results, strict=True) if r}


async def _reset_one(addr: Address, password: str, name: str) -> None:
    async with client(addr, password) as r:
        await r.call("SENTINEL", "RESET", name)


async def reset(sentinels: Iterable[Address], password: str, name: str) -> dict[Address, str]:
    """SENTINEL RESET `name` on every sentinel: each forgets the replicas and
    sentinels it knew of that master (a lost servicehost's copy and
    sentinel) and finds the live ones again within seconds; what failed
    where ({} when every sentinel did it)."""
    addrs = list(sentinels)
    results = await asyncio.gather(
        *(aio.wait_for(_reset_one(a, password, name), CALL_TIMEOUT_S) for a in addrs),
        return_exceptions=True,
    )
    return {a: str(r) or type(r).__name__ for a, r in zip(addrs, results, strict=True) if r}


async def _master_of(addr: Address, password: str, name: str) -> Address | None:
    async with client(addr, password) as r:
        return sentinel.address(await r.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name))


async def ask_master(
    sentinels: Iterable[Address], password: str, name: str, quorum: int = sentinel.QUORUM
) -> Address | None:
    """The master of `name` a quorum of the reachable sentinels names, or None."""
    results = await asyncio.gather(
        *(aio.wait_for(_master_of(a, password, name), CALL_TIMEOUT_S) for a in sentinels),
        return_exceptions=True,
    )
    answers = [r for r in results if not isinstance(r, BaseException)]
    return sentinel.agreed_master(answers, quorum)
