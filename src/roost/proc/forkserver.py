"""`roost up`'s side of the zygote (`roost.cli.zygote`): roles forked from a
process that imported their common base once, so its memory is shared.

`ForkServer.spawn(args, env, sockets)` starts `roost ARGS` as a forked child
of the current zygote and returns a `Forked`, which a `Supervisor` treats as
it treats an `asyncio.subprocess.Process` (pid, returncode, wait(), stderr):
its stderr is a pipe whose write end went to the child, its exit comes as
the zygote's report. The zygote is started at the first spawn and again
whenever it is gone (a crash ends its children: they die with it, and are
restarted by their supervisor like any exit).

`renew()` (a reload: the daemons replaced, perhaps by a new version's code)
makes the next spawn start a new zygote, which imports the code as it is on
disk now; the old one serves no new spawn and is closed once none of its
children is left (closing it earlier would end them).

Detached (the default where this process is a subreaper, as `roost up`
is): the zygote forks each role through a middle process that exits at
once, so the role is this process's own child (adopted), waited for here
through a pidfd, and outlives its zygote. A zygote kept for the platform's
life held ~16 MB no role shared any more (issue 21), so it goes: at once
when `renew()` closes it (`roost up` does once every role is up), or by
itself after `IDLE_EXIT_S` without a request (saying goodbye first). A
spawn that its zygote retired before reading is sent to a new one; the
next spawn after that starts one (a role's restart waits for its imports).
While a spawn is under way its child may already be ours and not yet
known: `busy` tells the adopted orphans' reaper to wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from roost.proc import spawn
from roost.proc.stop import signal_group, terminate
from roost.proc.wait import exited

PACKET = 1 << 20
# A zygote that does not answer a spawn within this long is taken as stuck
# (its first answer waits for its imports, slow on a loaded machine).
SPAWN_TIMEOUT_S = 90.0
# A detached zygote exits after this long without a request, if nothing
# retired it before (`roost up` does once every role is up). Longer than a
# start's or a reload's wait between two spawns (each waits for the one
# before to be up, 15-25 s on a loaded machine): a second zygote would fork
# the rest, which would then share no page with the first ones (+15 MB).
IDLE_EXIT_S = 300.0
PR_GET_CHILD_SUBREAPER = 37


def is_subreaper() -> bool:
    """Whether orphaned descendants are adopted by this process."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        flag = ctypes.c_int(0)
        return libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0 and bool(
            flag.value
        )
    except (OSError, AttributeError):
        return False


class ZygoteRetired(OSError):
    """The zygote exited idle without reading the request: send it again."""


class Forked:
    """A role forked by a zygote, as a Supervisor sees a child process."""

    def __init__(self, pid: int, stderr: asyncio.StreamReader | None) -> None:
        self.pid = pid
        self.stderr = stderr
        self.returncode: int | None = None
        self._ended = asyncio.Event()

    def _exited(self, status: int) -> None:
        if self.returncode is None:
            self.returncode = status
            self._ended.set()

    async def wait(self) -> int:
        await self._ended.wait()
        assert self.returncode is not None
        return self.returncode


class Zygote:
    """One zygote process and its connection."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        conn: socket.socket,
        adopt: Callable[[Forked], None] | None = None,
    ) -> None:
        self.proc = proc
        self.conn = conn
        # Children it reports the ends of (not detached).
        self.children: dict[int, Forked] = {}
        # Where a detached child goes: ours to wait for.
        self.adopt = adopt
        self.retired = False
        # Each spawn's answer by its request's id: one given up on (its
        # asker cancelled) is told apart from the next one's.
        self.waiting: dict[int, asyncio.Future[Forked]] = {}
        self.ids = itertools.count(1)
        self.draining = False
        self.reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        label: Sequence[str] = (),
        adopt: Callable[[Forked], None] | None = None,
        idle_exit_s: float = IDLE_EXIT_S,
    ) -> Zygote:
        """`label`: more arguments, only for ps to show (roost up's --data DATA);
        `adopt`: fork detached, each child handed to it."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        detach = ["--detach", str(idle_exit_s)] if adopt is not None else []
        try:
            proc = await spawn.start(
                [sys.executable, "-m", "roost.cli.zygote", str(theirs.fileno()), *detach, *label],
                pass_fds=[theirs.fileno()],
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        z = cls(proc, ours, adopt)
        z.reader = asyncio.create_task(z._read(), name=f"zygote-{proc.pid}")
        return z

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None and self.reader is not None and not self.reader.done()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(self.conn, PACKET)
                if not data:
                    break
                msg = json.loads(data)
                if msg.get("bye"):
                    self.retired = True
                    break
                if "exit" in msg:
                    child = self.children.pop(int(msg["exit"]), None)
                    if child is not None:
                        child._exited(int(msg["status"]))
                    if self.draining and not self.children:
                        break
                else:
                    self._answered(msg)
        except (OSError, ValueError):
            pass
        finally:
            # Gone: so are its children (they die with it), whatever it reported.
            for child in self.children.values():
                child._exited(-9)
            self.children.clear()
            for fut in self.waiting.values():
                if not fut.done():
                    fut.set_exception(
                        ZygoteRetired("the zygote retired unasked")
                        if self.retired
                        else OSError("the zygote is gone")
                    )
            self.waiting.clear()
            self.conn.close()

    def _answered(self, msg: dict[str, Any]) -> None:
        """A spawn's answer. The child is known from here on, before any
        report of its end (which comes after, on the same connection)."""
        fut = self.waiting.pop(int(msg.get("id") or 0), None)
        if "pid" not in msg:
            if fut is not None and not fut.done():
                fut.set_exception(OSError(f"the zygote could not fork: {msg.get('error')}"))
            return
        child = Forked(int(msg["pid"]), None)
        if msg.get("detached") and self.adopt is not None:
            self.adopt(child)  # ours now: it outlives the zygote
        else:
            self.children[child.pid] = child
        if fut is None or fut.done():
            # Its asker gave up (cancelled): nothing would supervise it.
            signal_group(child.pid, signal.SIGKILL)
        else:
            fut.set_result(child)

    async def spawn(
        self, args: Sequence[str], env: Mapping[str, str], sockets: Sequence[tuple[str, int]]
    ) -> Forked:
        if not self.alive:
            raise ZygoteRetired("the zygote is gone")
        loop = asyncio.get_running_loop()
        ident = next(self.ids)
        fut: asyncio.Future[Forked] = loop.create_future()
        self.waiting[ident] = fut
        read_end, write_end = os.pipe()
        try:
            msg = {"id": ident, "args": list(args), "env": dict(env)}
            msg["names"] = [n for n, _ in sockets]
            try:
                socket.send_fds(
                    self.conn, [json.dumps(msg).encode()], [write_end, *(fd for _, fd in sockets)]
                )
            except OSError as exc:
                # Never read: the zygote closed its end (retired, or died).
                raise ZygoteRetired(f"the zygote is gone: {exc}") from exc
            finally:
                os.close(write_end)
            async with asyncio.timeout(SPAWN_TIMEOUT_S):
                child = await fut
        except BaseException:
            self.waiting.pop(ident, None)
            os.close(read_end)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                signal_group(fut.result().pid, signal.SIGKILL)  # started, but no one to own it
            raise
        reader = asyncio.StreamReader(loop=loop)
        pipe = os.fdopen(read_end, "rb", 0)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        child.stderr = reader
        return child

    async def reader_done(self) -> None:
        """Until its connection's reader has seen it go."""
        if self.reader is not None:
            await asyncio.wait([self.reader])

    async def close(self) -> None:
        """Stop serving: the zygote exits once its last child has."""
        self.draining = True
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_WR)
        # A spawn under way is answered before the zygote sees the end.
        if not self.children and not self.waiting and self.reader is not None:
            self.reader.cancel()

    async def stop(self, grace_s: float = 5.0) -> None:
        await self.close()
        with contextlib.suppress(ProcessLookupError):
            await terminate(self.proc, grace_s)
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


class ForkServer:
    """The zygotes of one `roost up`: the current one and those draining."""

    def __init__(
        self,
        label: Sequence[str] = (),
        detach: bool | None = None,
        idle_exit_s: float = IDLE_EXIT_S,
    ) -> None:
        """`detach`: fork roles as our own children (None: when we are a subreaper)."""
        self.label = list(label)
        self.detach = is_subreaper() if detach is None else detach
        self.idle_exit_s = idle_exit_s
        self.current: Zygote | None = None
        self.old: list[Zygote] = []
        self._starting = asyncio.Lock()
        self.adopted: dict[int, Forked] = {}
        self._waiters: set[asyncio.Task[None]] = set()
        self._spawning = 0

    @property
    def busy(self) -> bool:
        """A spawn is under way: its child may be ours already, not yet known."""
        return self._spawning > 0

    def pids(self) -> set[int]:
        """The zygotes' and the adopted roles' pids (`roost up` reaps adopted
        orphans, not these)."""
        zs = [z for z in (self.current, *self.old) if z is not None]
        return {z.proc.pid for z in zs if z.proc.returncode is None} | set(self.adopted)

    def _adopt(self, child: Forked) -> None:
        self.adopted[child.pid] = child
        task = asyncio.create_task(self._wait_for(child), name=f"forked-{child.pid}")
        self._waiters.add(task)
        task.add_done_callback(self._waiters.discard)

    async def _wait_for(self, child: Forked) -> None:
        """Reap a detached child, ours since its middle process exited."""
        try:
            await exited(child.pid)
            _, status = os.waitpid(child.pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = -9  # reaped elsewhere: its status is lost
        finally:
            self.adopted.pop(child.pid, None)
        child._exited(code)

    async def spawn(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        sockets: Sequence[tuple[str, int]] = (),
    ) -> Forked:
        self._spawning += 1
        try:
            for attempt in (1, 2):
                async with self._starting:
                    if self.current is None or not self.current.alive:
                        if self.current is not None:
                            await self.current.stop()
                        adopt = self._adopt if self.detach else None
                        self.current = await Zygote.start(self.label, adopt, self.idle_exit_s)
                    zygote = self.current
                self._prune()
                try:
                    return await zygote.spawn(args, env, sockets)
                except ZygoteRetired:
                    if attempt == 2:
                        raise
                    # It went idle as we asked; the next one serves it.
                    await zygote.reader_done()
            raise AssertionError("unreachable")
        finally:
            self._spawning -= 1

    async def renew(self) -> None:
        """The next spawn starts a new zygote (with the code now on disk)."""
        async with self._starting:
            if self.current is not None:
                await self.current.close()
                self.old.append(self.current)
                self.current = None
        self._prune()

    def _prune(self) -> None:
        self.old = [z for z in self.old if z.proc.returncode is None]

    async def stop(self) -> None:
        for z in [z for z in (self.current, *self.old) if z is not None]:
            await z.stop()
        self.current, self.old = None, []
        for task in list(self._waiters):
            task.cancel()
        await asyncio.gather(*self._waiters, return_exceptions=True)
