"""A real servicehost for tests: a temp DATA dir, keys, cluster.json, the daemon
as a subprocess started as `roost servicehost` (so its entry point, `run()`
itself, signals and child cleanup are exercised),
and an RPC client with its own key."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.identity import ensure_member, identity
from roost.wire.keys import KeyPair
from roost.wire.messages import (
    Msg,
    ServiceCredentials,
    ServiceHostStatus,
    ServiceHostStatusRequest,
)
from roost.wire.node import Node
from roost.wire.rpc import RpcClient
from tests.conftest import free_port


class Servicehost:
    def __init__(
        self,
        env: dict[str, str] | None = None,
        controller: bool = False,
        backupd: bool = False,
        host: str = "local",
    ) -> None:
        # The host its keys' identities name: its id to the controllers.
        self.host = host
        # Under /tmp (not pytest's 0700 tmp dirs): when tests run as root the
        # servers run as the service user, who must be able to walk down here.
        self.data = Path(tempfile.mkdtemp(prefix="roost-svc-", dir="/tmp"))
        os.chmod(self.data, 0o711)
        self.keys = self.data / "keys"
        self.server_keys = self.member("servicehost")
        # The tests speak to the servicehost as the controller does.
        self.client_keys: KeyPair = self.member("controller")
        self.endpoint = Endpoint(f"tcp://127.0.0.1:{free_port()}", self.server_keys.public_text)
        endpoints = {"servicehost": [self.endpoint]}
        self.controller_keys: KeyPair | None = None
        if controller:
            # A controller that a test may bring up later, to receive status pushes.
            self.controller_keys = self.client_keys
            endpoints["controller"] = [
                Endpoint(f"tcp://127.0.0.1:{free_port()}", self.controller_keys.public_text)
            ]
        # A backupd on this host: its key is a member, its endpoint in the book.
        self.backupd_keys = self.member("backupd") if backupd else None
        if self.backupd_keys is not None:
            endpoints["backupd"] = [
                Endpoint(f"tcp://127.0.0.1:{free_port()}", self.backupd_keys.public_text)
            ]
        self.cluster = ClusterConfig(endpoints=endpoints)
        self.cluster.save(self.data / "cluster.json")
        # PostgreSQL from the start, as these tests were written for (and a
        # cluster's servicehost runs it); test_pg_on_demand.py starts one
        # with the default, on demand.
        self.env = {
            **os.environ, "ROOST_LOG_LEVEL": "INFO", "ROOST_POSTGRES_START": "always",
            **(env or {}),
        }  # fmt: skip
        self.log = self.data / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.children: set[int] = set()

    def running(self) -> Iterator[Servicehost]:
        """For a fixture: started, PostgreSQL up; its log printed on failure; cleaned up."""
        self.start()
        try:
            asyncio.run(self.wait_postgres_up())
            yield self
        except BaseException:
            print(self.tail())
            raise
        finally:
            self.cleanup()

    def member(self, role: str) -> KeyPair:
        """The keypair of `role` on this (one) host, admitted as that role."""
        return ensure_member(self.keys, role, identity(role, self.host))

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                # The real entry point: `roost servicehost` (private umask, tightening).
                [sys.executable, "-m", "roost", "--data", str(self.data), "servicehost"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def servers(self) -> set[int]:
        """Every process running in this data directory: the PostgreSQL and
        Redis servers (and PostgreSQL's backends), which are not the daemon's
        children (they outlive it)."""
        pids = set()
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if Path(p.cwd()).is_relative_to(self.data) and p.status() != psutil.STATUS_ZOMBIE:
                    pids.add(p.pid)
        return pids

    def note_children(self) -> None:
        """Remember the daemon's descendants and servers, to check none outlives it."""
        if self.proc is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                kids = psutil.Process(self.proc.pid).children(recursive=True)
                self.children |= {k.pid for k in kids}
        self.children |= self.servers()

    def end(self, sig: int, timeout: float = 90.0) -> int:
        """Send the daemon `sig` and wait for it to exit; its status."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"servicehost did not end in {timeout}s after {sig!r}:\n{self.tail()}"
            ) from None
        self.proc = None
        return rc

    def stop(self, timeout: float = 90.0) -> int:
        """A full stop (SIGTERM): the daemon and every server of it gone."""
        assert self.proc is not None
        self.note_children()
        rc = self.end(signal.SIGTERM, timeout)
        deadline = time.monotonic() + 10
        alive = [p for p in self.children if psutil.pid_exists(p)]
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [p for p in alive if _alive(p)]
        assert not alive, f"servers outlived the servicehost: {alive}"
        self.children.clear()
        return rc

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        # Servers a test left without a daemon (it killed it): none outlives the test.
        for pid in self.servers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.data, ignore_errors=True)

    @contextlib.asynccontextmanager
    async def client(self, keys: KeyPair | None = None) -> AsyncIterator[RpcClient]:
        async with Node(keys or self.client_keys, []) as node:
            client = RpcClient(node, [self.endpoint])
            try:
                yield client
            finally:
                await client.close()

    async def call(self, msg: Msg, timeout: float = 60.0, keys: KeyPair | None = None) -> Msg:
        async with self.client(keys) as c:
            return await c.call(msg, timeout=timeout, tries=1)

    async def as_backupd(self, msg: Msg, timeout: float = 120.0) -> Msg:
        """`msg` sent with the backupd key (made with `backupd=True`)."""
        assert self.backupd_keys is not None, "Servicehost(backupd=True)"
        return await self.call(msg, timeout, self.backupd_keys)

    async def status(self) -> ServiceHostStatus:
        reply = await self.call(ServiceHostStatusRequest(), timeout=10)
        assert isinstance(reply, ServiceHostStatus)
        return reply

    async def wait_postgres_up(self, timeout: float = 120.0, not_pid: int = 0) -> int:
        """Wait until the cluster reports up (with a pid other than `not_pid`)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, (
                f"servicehost exited:\n{self.tail()}"
            )
            try:
                st = await self.status()
            except Exception as exc:  # not bound yet
                last = exc
            else:
                cluster = [s for s in st.servers if s.app == "" and s.kind == "postgres"]
                last = cluster
                if cluster and cluster[0].state == "up" and cluster[0].pid not in (0, not_pid):
                    return cluster[0].pid
            await asyncio.sleep(0.2)
        raise AssertionError(f"PostgreSQL not up within {timeout}s ({last}):\n{self.tail()}")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# redis-py retries failed connections for seconds by default; a refusal is
# what these tests expect, so they want it at once.
NO_RETRY = Retry(NoBackoff(), 0)


def redis_for(c: ServiceCredentials) -> redis.Redis:
    return redis.Redis.from_url(c.url, socket_timeout=5, retry=NO_RETRY)
