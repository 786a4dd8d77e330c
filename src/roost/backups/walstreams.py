"""Barman's servers' WAL streams: one supervised pg_receivewal per server.

WAL streams through pg_receivewal, which backupd runs itself as `barman
receive-wal SERVER` would, holding Barman's receive-wal lock so Barman
counts it as its own (roost.backups.walreceiver: its command line and the
lock; without Barman's ~30 MB process around it, issue 21). Each is a
supervised child (`roost.proc.supervise`): restarted with backoff when it
exits, stopped with the Barman adapter (roost.backups.barman), dead with
backupd. One left streaming by a predecessor (a killed `barman
receive-wal`'s child did not die with it) holds the slot ("already in use")
forever, so such strays (found by their exact --directory) are killed
before each start. What each receiver said since its start is kept: told
the WAL it asks for is gone, it can never go on (`wal_gone`).

The Barman adapter owns the servers (their sources and slots) and runs
Barman's own commands; this module only starts, restarts and stops the
receivers, asking it for a server's source and slot at each start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import psycopg

from roost.backups import walreceiver
from roost.backups.pgfacts import BASE_ENV, connect, ordered_source
from roost.proc import spawn as proc
from roost.proc.backoff import Backoff
from roost.proc.children import Policy
from roost.proc.supervise import Program, Supervisor
from roost.wire.messages import PgSource

# The receivers' words and strays were always logged as the Barman adapter's.
log = logging.getLogger("roost.backups.barman")

# How long asking the source for the slot's state may take (each refresh).
SLOT_QUERY_TIMEOUT_S = 5.0
# How long a start waits for the source's walsender to let go of the slot.
RELEASE_WAIT_S = 30.0
# How much of a receiver's output since its start is kept (`wal_gone` reads it).
SAID_KEPT = 4096
RECEIVE_POLICY = Policy(
    backoff=Backoff(base_s=1.0, max_s=30.0, reset_after_s=60.0),
    stop_grace_s=10.0,
    fatal=frozenset(),  # never give up on WAL: a source that comes back is streamed again
)


class WalStreams:
    """The receivers of Barman's servers under one supervisor: `start()`,
    then `stream(server)` for each; `close()` stops them all."""

    def __init__(
        self,
        home: Path,
        passfile: Path,
        pg_bin: Path,
        *,
        source: Callable[[str], PgSource],
        slot: Callable[[str], str],
    ) -> None:
        self.home = home
        self.passfile = passfile
        self.pg_bin = pg_bin
        # Asked at each start: a server's source and slot as Barman has them now.
        self._source = source
        self._slot = slot
        self._sup = Supervisor(logger=log)
        self._task: asyncio.Task[None] | None = None
        self._streamed: set[str] = set()  # servers with a receive-wal supervised
        self._said: dict[str, str] = {}  # server -> its receiver's output since its start

    def streaming_dir(self, server: str) -> Path:
        return self.home / server / "streaming"

    # ------------------------------------------------------------ lifetime

    def start(self) -> None:
        self._task = asyncio.create_task(self._sup.run(), name="barman-receive-wal")

    async def close(self) -> None:
        """Stop every receive-wal (and its pg_receivewal) and return once gone."""
        if self._task is None:
            return
        self._sup.stop()
        try:
            await asyncio.shield(self._task)
        finally:
            self._task = None

    # ------------------------------------------------------------ the receivers

    @property
    def streamed(self) -> frozenset[str]:
        """The servers with a receive-wal supervised."""
        return frozenset(self._streamed)

    def stream(self, server: str) -> None:
        """Supervise a receive-wal for the server."""
        self._sup.add(self._receiver(server))
        self._streamed.add(server)

    async def forget(self, server: str) -> None:
        """Stop the server's receive-wal for good."""
        self._streamed.discard(server)
        await self._sup.remove(f"receive-wal:{server}")

    async def pause(self, server: str) -> None:
        """Stop the server's receive-wal, the server still counted as
        streamed (`resume` starts it again)."""
        await self._sup.remove(f"receive-wal:{server}")

    def resume(self, server: str) -> None:
        self._sup.add(self._receiver(server))

    def why(self, server: str) -> str:
        """What the server's receiver last said when it failed."""
        c = self._sup.children.get(f"receive-wal:{server}")
        return c.last_error if c is not None and c.last_error else "receive-wal said nothing"

    def receiving(self, server: str) -> bool:
        """Whether the server's receive-wal is running (it may still be connecting)."""
        c = self._sup.children.get(f"receive-wal:{server}")
        return c is not None and c.state == "up"

    def wal_gone(self, server: str) -> bool:
        """Whether the server's receiver was told the WAL it asks for is gone
        since its start (walreceiver.wal_gone)."""
        return server in self._said and walreceiver.wal_gone(self._said[server])

    async def clear_strays(self, server: str) -> None:
        """Kill pg_receivewal processes still streaming the server (`_kill_strays`)
        and, when there were any, wait for the source to let go of the slot."""
        if await asyncio.to_thread(_kill_strays, self.streaming_dir(server)):
            await self._slot_released(server)

    def _receiver(self, server: str) -> Program:
        start = functools.partial(self._start_receive, server)
        return Program(f"receive-wal:{server}", start, policy=RECEIVE_POLICY,
                       output=self._heard(server))  # fmt: skip

    def _heard(self, server: str) -> Callable[[bytes], None]:
        """The receiver's output: logged, and its last words since it was
        started kept (`wal_gone` reads them)."""

        def heard(data: bytes) -> None:
            text = data.decode(errors="replace")
            log.info("%s receive-wal: %s", server, text)
            self._said[server] = (self._said.get(server, "") + text)[-SAID_KEPT:]

        return heard

    async def _start_receive(self, server: str) -> asyncio.subprocess.Process:
        """pg_receivewal as `barman receive-wal` runs it, without Barman's
        process around it (roost.backups.walreceiver)."""
        self._said[server] = ""
        streaming = self.streaming_dir(server)
        await self.clear_strays(server)
        streaming.mkdir(parents=True, exist_ok=True)
        segment = await self._segment_size(server)
        if segment and (
            odd := await asyncio.to_thread(walreceiver.repair_partial, streaming, segment)
        ):
            log.info("%s: emptied %s, of a wrong size (a receiver killed mid-write)", server, odd)
        # A pair's primary listed first: started again after a failover,
        # pg_receivewal would try a dead first-listed member until
        # tcp_user_timeout (10 s) before the new primary.
        source = await ordered_source(self._source(server))
        lock = walreceiver.take_lock(self.home, server)
        try:
            child = await proc.start(
                walreceiver.receive_argv(
                    source, self.passfile, streaming, self._slot(server), self.pg_bin
                ),
                env={**BASE_ENV, "HOME": str(self.home)},
                cwd=self.home,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=[lock],
            )
            walreceiver.write_owner(lock, child.pid)
        finally:
            os.close(lock)  # the receiver holds it now, until it exits
        return child

    async def _segment_size(self, server: str) -> int:
        """The source's WAL segment size in bytes; 0 when it does not answer
        (then pg_receivewal cannot connect either, and is started again)."""
        query = "SELECT pg_size_bytes(current_setting('wal_segment_size'))"
        try:
            async with asyncio.timeout(SLOT_QUERY_TIMEOUT_S):
                conn = await connect(self._source(server), "postgres", autocommit=True)
                async with conn:
                    row = await (await conn.execute(query)).fetchone()
        except (psycopg.Error, TimeoutError, OSError):
            return 0
        return int(row[0]) if row else 0

    async def _slot_released(self, server: str) -> None:
        """Wait (a little) until the source's walsender has let go of the slot."""
        query = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s AND active"
        # The slot the server streams through (a backupd's own, slots.py), as
        # barman.conf names it: waiting on another name would not wait.
        slot = self._slot(server)
        with contextlib.suppress(psycopg.Error, TimeoutError):
            async with asyncio.timeout(RELEASE_WAIT_S):
                conn = await connect(self._source(server), "postgres", autocommit=True)
                async with conn:
                    while (await (await conn.execute(query, (slot,))).fetchone()) != (0,):
                        await asyncio.sleep(0.05)


def _kill_strays(streaming: Path) -> bool:
    """SIGKILL pg_receivewal processes still streaming into `streaming` (left
    by a receive-wal that was killed: they hold the replication slot) and wait
    until they are dead (a zombie is: init reaps it when it will); True if any."""
    want = f"--directory={streaming}"
    killed = []
    for p in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if p.info["name"] == "pg_receivewal" and want in (p.info["cmdline"] or []):
                log.warning("killing a stray pg_receivewal [%d] in %s", p.pid, streaming)
                p.send_signal(signal.SIGKILL)
                killed.append(p)
    for _ in range(100):
        with contextlib.suppress(psutil.Error):
            if all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in killed):
                break
        time.sleep(0.05)
    return bool(killed)
