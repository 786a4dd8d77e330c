"""The serving half of exec sessions: a process whose bytes a gateway relays.

Used by runners (`run APP CMD`, cron) and servicehosts (rsync/scp/sftp on an
app's data directory); the gateway is the client (see the exec messages in
`roost.wire.messages`). The process starts and is reaped through the process
toolkit (`roost.proc`): its own session, dying with us, its group killed
once it has exited.

Theory of operation. A session is one child process in its own session
(process group), with either a pty (stdin, stdout and stderr all on the
slave; the master is ours) or three pipes. Everything is keyed by the
session id the client chose, and every request is idempotent, so the
RpcClient's retries after a lost reply are harmless:

  input   ExecInput carries its offset in the input stream; bytes before
          what we already took are dropped, so a resend is never written twice.
  output  every chunk read gets the next sequence number and stays buffered
          until a poll acknowledges it (`after`); a lost ExecOutput is simply
          sent again. Reading pauses while more than OUTPUT_LIMIT bytes are
          unacknowledged, which pushes back on a process writing faster than
          the client takes it.
  exit    once the leader has exited (pidfd), whatever is left of its group
          is SIGKILLed (a command's leftovers do not outlive it), the leader
          is reaped and the streams are drained; the exit status is reported
          only after the last chunk has been acknowledged.
  end     ExecClose, or no request for `idle_s` (the client vanished), stops
          the process (TERM to the group, grace, KILL) and forgets it. A
          session started with `keep_s` waits that long instead, running or
          ended, exit status and output kept (a cron run whose controller
          died, collected by the next one).

Held sessions (a runner's: `run APP CMD`, cron). Given a `Holder`, every
session's process is started through it and held by another process (the
runner's shim, `roost.runner.shimsession`), which keeps the pty or pipes,
numbers the output and keeps it until acknowledged, and keeps the exit
status until the session is forgotten. Then chunks carry the holder's
numbers, acknowledgements go through to it, and a new server (after its
predecessor's crash or hand-over) `adopt`s the held sessions: a client's
next poll, with the last number it saw, carries on where it was.

Every task belongs to the TaskGroup of `run()`, which is the owner of all
sessions; `shutdown()` closes them all and makes `run()` return;
`shutdown(hand_over=True)` lets go of the held ones, which keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from roost import aio
from roost.proc import spawn as proc
from roost.proc.stop import signal_group
from roost.proc.wait import kill_and_reap, wait_group
from roost.sessions.held import Held, Holder
from roost.wire.dispatch import Entry, Handlers, on
from roost.wire.messages import (
    Error,
    ExecChunk,
    ExecClose,
    ExecInput,
    ExecOutput,
    ExecPoll,
    ExecResize,
    ExecSignal,
    Msg,
    Ok,
)

log = logging.getLogger("roost.sessions")

READ_SIZE = 64 * 1024
# Unacknowledged output beyond which we stop reading from the process.
OUTPUT_LIMIT = 1 << 20
# Most output bytes in one ExecOutput.
REPLY_LIMIT = 512 * 1024
# After the leader exits, how long to wait for the streams to reach EOF.
DRAIN_TIMEOUT_S = 2.0
# Longest a poll waits for output (the client's RPC timeout must exceed it).
MAX_POLL_WAIT_S = 2.0
SIGNALS = {
    name: getattr(signal, f"SIG{name}")
    for name in ("INT", "TERM", "HUP", "KILL", "QUIT", "USR1", "USR2", "ALRM", "PIPE", "ABRT")
}

Stream = Literal["stdout", "stderr"]
ExitHook = Callable[[int], None]
SessionMsg = TypeVar("SessionMsg", ExecPoll, ExecInput, ExecResize, ExecSignal, ExecClose)


@dataclass(frozen=True)
class Spawn:
    """What to run for a session."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    pty: bool = False
    rows: int = 24
    cols: int = 80
    # Called once with the exit status when the process has ended (cleanup).
    on_exit: ExitHook | None = None
    # Run as this uid/gid (no supplementary groups) when set; we must be root.
    user: int | None = None
    group: int | None = None
    # Runs in the child before exec, after its own session and pty, before
    # the uid drop (a tenant launch joins its cgroup and shields its sandbox
    # from signals; roost.proc.spawn.ChildSetup).
    preexec: Callable[[], None] | None = None
    # Kept this long without a request instead of the sessions' idle_s.
    keep_s: float | None = None
    # For a holder: the data preexec stands for, and what its record keeps.
    setup: Mapping[str, object] = field(default_factory=dict)
    record: Mapping[str, object] = field(default_factory=dict)


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name.removeprefix("SIG")
    except ValueError:
        return str(sig)


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    rows = min(max(rows, 1), 10000)
    cols = min(max(cols, 1), 10000)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


@dataclass
class Session:
    id: str
    popen: subprocess.Popen[bytes] | None
    pty: bool
    on_exit: ExitHook | None
    held: Held | None = None
    # fd -> stream name, for the fds we read output from
    readers: dict[int, Stream] = field(default_factory=dict)
    stdin_fd: int = -1
    chunks: list[ExecChunk] = field(default_factory=list)
    next_seq: int = 1
    unacked: int = 0
    paused: set[int] = field(default_factory=set)
    input_offset: int = 0
    pending_input: bytearray = field(default_factory=bytearray)
    input_eof: bool = False
    writing: bool = False
    returncode: int | None = None
    finished: bool = False  # reaped and drained: exit may be reported
    last_seen: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False
    idle_s: float | None = None  # None: the ExecSessions' own
    acked: int = 0  # a held session's: acknowledged up to this number
    task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.held.pid if self.held is not None else self.popen.pid if self.popen else 0

    @property
    def exit_status(self) -> tuple[int, str]:
        rc = self.returncode if self.returncode is not None else -signal.SIGKILL
        if rc < 0:
            return 128 - rc, signal_name(-rc)
        return rc, ""


class ExecSessions:
    def __init__(
        self,
        idle_s: float = 30.0,
        grace_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        holder: Holder | None = None,
    ) -> None:
        self.holder = holder
        self._hand_over = False
        self.idle_s = idle_s
        self.grace_s = grace_s
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        # The exec requests alone (a role serving sessions lists `entries()`).
        self.handle = Handlers("exec sessions", self.entries())

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Own every session's tasks; reap idle sessions until `shutdown()`."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._ready.set()
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await aio.wait_for(self._stop.wait(), 1.0)
                now = self.clock()
                for s in list(self.sessions.values()):
                    idle = self.idle_s if s.idle_s is None else s.idle_s
                    if not s.closing and now - s.last_seen > idle:
                        log.warning("session %s: no client for %.0fs; stopping it", s.id, idle)
                        self._close(s)
            for s in list(self.sessions.values()):
                if self._hand_over and s.held is not None and s.task is not None:
                    s.task.cancel()  # let go: it runs on for our successor
                    self.sessions.pop(s.id, None)
                else:
                    self._close(s)
        self._tg = None

    def shutdown(self, hand_over: bool = False) -> None:
        """Close every session; with `hand_over`, leave the held ones running."""
        self._hand_over = hand_over
        self._stop.set()

    # ------------------------------------------------------------ requests

    def has(self, session_id: str) -> bool:
        return session_id in self.sessions

    async def start(self, session_id: str, spawn: Spawn) -> Msg:
        """Start the session's process; a repeated start of a live session is Ok."""
        if session_id in self.sessions:
            return Ok(detail=session_id)
        await self._ready.wait()
        if self._stop.is_set() or self._tg is None:
            return Error(message="shutting down", retryable=True)
        if self.holder is not None:
            try:
                held = await self.holder.start(session_id, spawn)
            except (OSError, RuntimeError) as exc:
                return Error(message=f"could not start {spawn.argv[0]}: {exc}")
            self.adopt(session_id, held, spawn.pty, spawn.on_exit, spawn.keep_s)
            log.info("session %s: started %s (pid %d)", session_id, spawn.argv[0], held.pid)
            return Ok(detail=session_id)
        master = slave = -1
        try:
            stdin: int = subprocess.PIPE
            stdout: int = subprocess.PIPE
            stderr: int = subprocess.PIPE
            if spawn.pty:
                master, slave = os.openpty()
                _set_winsize(slave, spawn.rows, spawn.cols)
                stdin = stdout = stderr = slave
            popen = proc.popen(
                spawn.argv,
                env=spawn.env,
                cwd=spawn.cwd,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                # With a pty: it is the controlling terminal, so ^C, window
                # changes and job control work.
                setup=proc.child_setup(
                    ctty=spawn.pty, enter=spawn.preexec, uid=spawn.user, gid=spawn.group
                ),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            for fd in (master, slave):
                if fd >= 0:
                    os.close(fd)
            return Error(message=f"could not start {spawn.argv[0]}: {exc}")
        if slave >= 0:
            os.close(slave)
        s = Session(
            id=session_id, popen=popen, pty=spawn.pty, on_exit=spawn.on_exit, idle_s=spawn.keep_s
        )
        s.last_seen = self.clock()
        if spawn.pty:
            s.readers[master] = "stdout"
            s.stdin_fd = master
        else:
            assert popen.stdin and popen.stdout and popen.stderr
            s.stdin_fd = popen.stdin.fileno()
            s.readers[popen.stdout.fileno()] = "stdout"
            s.readers[popen.stderr.fileno()] = "stderr"
        for fd in {*s.readers, s.stdin_fd}:
            os.set_blocking(fd, False)
        self.sessions[session_id] = s
        loop = asyncio.get_running_loop()
        for fd in s.readers:
            loop.add_reader(fd, self._on_readable, s, fd)
        s.task = self._tg.create_task(self._watch(s))
        log.info("session %s: started %s (pid %d)", session_id, spawn.argv[0], popen.pid)
        return Ok(detail=session_id)

    def adopt(
        self,
        session_id: str,
        held: Held,
        pty: bool,
        on_exit: ExitHook | None,
        keep_s: float | None,
    ) -> None:
        """Serve a held session (just started, or left by a predecessor).
        Call once `run()` is under way."""
        assert self._tg is not None
        s = Session(id=session_id, popen=None, pty=pty, on_exit=on_exit, idle_s=keep_s, held=held)
        s.last_seen = self.clock()
        s.next_seq = held.first_seq
        s.acked = held.first_seq - 1
        s.input_offset = held.input_offset
        self.sessions[session_id] = s
        s.task = self._tg.create_task(self._watch_held(s, held))

    async def ready(self) -> None:
        """Returns once `run()` owns the sessions (adopt may be called)."""
        await self._ready.wait()

    def entries(self) -> list[Entry]:
        """The exec requests, for the table of a role serving sessions."""
        return [
            on(ExecPoll, self._on_session(self._on_poll)),
            on(ExecInput, self._on_session(self._on_input)),
            on(ExecResize, self._on_session(self._on_resize)),
            on(ExecSignal, self._on_session(self._on_signal)),
            on(ExecClose, self._on_session(self._on_close)),
        ]

    def _on_session(
        self, handler: Callable[[Session, SessionMsg], Awaitable[Msg]]
    ) -> Callable[[SessionMsg], Awaitable[Msg]]:
        """`handler` given the request's session, which counts as seen."""

        async def handle(msg: SessionMsg) -> Msg:
            s = self.sessions.get(msg.session)
            if s is None:
                return Error(message=f"no session {msg.session} (it ended or was never started)")
            s.last_seen = self.clock()
            return await handler(s, msg)

        return handle

    async def _on_poll(self, s: Session, msg: ExecPoll) -> Msg:
        return await self._poll(s, msg.after, msg.wait_s)

    async def _on_input(self, s: Session, msg: ExecInput) -> Msg:
        self._input(s, msg)
        return Ok()

    async def _on_resize(self, s: Session, msg: ExecResize) -> Msg:
        if s.held is not None and s.pty and s.returncode is None:
            s.held.resize(msg.rows, msg.cols)
        elif s.pty and s.stdin_fd >= 0 and s.returncode is None:
            with contextlib.suppress(OSError):
                _set_winsize(s.stdin_fd, msg.rows, msg.cols)  # the kernel sends SIGWINCH
        return Ok()

    async def _on_signal(self, s: Session, msg: ExecSignal) -> Msg:
        sig = SIGNALS.get(msg.signal.upper().removeprefix("SIG"))
        if sig is None:
            return Error(message=f"unsupported signal {msg.signal!r}")
        self._signal(s, sig)
        return Ok()

    async def _on_close(self, s: Session, _msg: ExecClose) -> Msg:
        self._close(s)
        return Ok()

    # ------------------------------------------------------------ output

    def _on_readable(self, s: Session, fd: int) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO on a pty master: every slave fd is closed (the process is gone).
            if exc.errno not in (errno.EIO, errno.EBADF):
                log.warning("session %s: read failed: %s", s.id, exc)
            data = b""
        if not data:
            self._stop_reading(s, fd)
            return
        s.chunks.append(ExecChunk(seq=s.next_seq, stream=s.readers[fd], data=data))
        s.next_seq += 1
        s.unacked += len(data)
        s.changed.set()
        if s.unacked > OUTPUT_LIMIT:
            for rfd in list(s.readers):
                if rfd not in s.paused:
                    asyncio.get_running_loop().remove_reader(rfd)
                    s.paused.add(rfd)

    def _held_chunk(self, s: Session, seq: int, stream: Stream, data: bytes) -> None:
        if seq <= s.acked:
            return  # the client has it (delivered through our predecessor)
        s.chunks.append(ExecChunk(seq=seq, stream=stream, data=data))
        s.next_seq = seq + 1
        s.unacked += len(data)
        s.changed.set()

    def _stop_reading(self, s: Session, fd: int) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(fd)
        s.paused.discard(fd)
        del s.readers[fd]
        if fd != s.stdin_fd:
            self._close_fd(s, fd)
        if not s.readers:
            s.drained.set()
        s.changed.set()

    def _close_fd(self, s: Session, fd: int) -> None:
        p = s.popen
        assert p is not None
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None and not f.closed and f.fileno() == fd:
                f.close()
                return
        with contextlib.suppress(OSError):
            os.close(fd)

    async def _poll(self, s: Session, after: int, wait_s: float) -> Msg:
        acked = [c for c in s.chunks if c.seq <= after]
        if s.held is not None and after > s.acked:
            s.acked = after
            s.held.ack(after)  # its holder keeps the output until now
        if acked:
            s.chunks = [c for c in s.chunks if c.seq > after]
            s.unacked -= sum(len(c.data) for c in acked)
            if s.paused and s.unacked <= OUTPUT_LIMIT:
                loop = asyncio.get_running_loop()
                for fd in s.paused:
                    loop.add_reader(fd, self._on_readable, s, fd)
                s.paused.clear()
        if not s.chunks and not s.finished:
            s.changed.clear()
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(s.changed.wait(), min(max(wait_s, 0.0), MAX_POLL_WAIT_S))
        out: list[ExecChunk] = []
        size = 0
        for c in s.chunks:
            if out and size + len(c.data) > REPLY_LIMIT:
                break
            out.append(c)
            size += len(c.data)
        if s.finished and len(out) == len(s.chunks):
            status, sig = s.exit_status
            return ExecOutput(session=s.id, chunks=out, exit_status=status, exit_signal=sig)
        return ExecOutput(session=s.id, chunks=out)

    # ------------------------------------------------------------ input

    def _input(self, s: Session, msg: ExecInput) -> None:
        end = msg.offset + len(msg.data)
        fresh = b""
        if end > s.input_offset and msg.offset <= s.input_offset:
            fresh = msg.data[s.input_offset - msg.offset :]
            s.input_offset = end
        eof = msg.eof and end >= s.input_offset
        if s.held is not None:
            if (fresh or eof) and s.returncode is None:
                s.held.write(fresh, eof)
            return
        s.pending_input += fresh
        if eof:
            s.input_eof = True
        self._write_some(s)

    def _write_some(self, s: Session) -> None:
        if s.stdin_fd < 0 or s.returncode is not None:
            s.pending_input.clear()
            return
        loop = asyncio.get_running_loop()
        while s.pending_input:
            try:
                n = os.write(s.stdin_fd, s.pending_input[:READ_SIZE])
            except BlockingIOError:
                break
            except OSError:  # the reader is gone (EPIPE): drop what is left
                s.pending_input.clear()
                break
            del s.pending_input[:n]
        if s.pending_input and not s.writing:
            loop.add_writer(s.stdin_fd, self._write_some, s)
            s.writing = True
        elif not s.pending_input and s.writing:
            loop.remove_writer(s.stdin_fd)
            s.writing = False
        if s.popen is None:
            return
        if not s.pending_input and s.input_eof and not s.pty and s.popen.stdin is not None:
            # A pty has no EOF of its own; a pipe is closed so the process sees it.
            if not s.popen.stdin.closed:
                s.popen.stdin.close()
            s.stdin_fd = -1

    # ------------------------------------------------------------ process

    def _signal(self, s: Session, sig: int) -> None:
        if s.returncode is not None:
            return
        if s.held is not None:
            s.held.signal(sig)
        elif s.popen is not None:
            signal_group(s.popen.pid, sig)

    async def _watch_held(self, s: Session, held: Held) -> None:
        # Cancelled (a hand-over), it lets go and the process runs on.
        s.returncode = await held.pump(
            lambda seq, stream, data: self._held_chunk(s, seq, stream, data)
        )
        self._ended(s)

    def _ended(self, s: Session) -> None:
        s.finished = True
        s.changed.set()
        status, sig = s.exit_status
        log.info("session %s: exited with %s", s.id, f"signal {sig}" if sig else status)
        if s.on_exit is not None:
            try:
                s.on_exit(status)
            except Exception:
                log.exception("session %s: exit hook failed", s.id)

    async def _watch(self, s: Session) -> None:
        assert s.popen is not None
        try:
            # Its leftovers are killed before it is reaped.
            s.returncode = await wait_group(s.popen)
            while not s.drained.is_set():
                try:
                    await aio.wait_for(s.drained.wait(), DRAIN_TIMEOUT_S)
                except TimeoutError:
                    # Paused for a slow client: its polls resume the reading.
                    # Otherwise an escaped process holds a stream open: stop.
                    if not s.paused or s.closing:
                        break
        finally:
            if s.returncode is None:  # cancelled: never leave the process behind
                s.returncode = kill_and_reap(s.popen)
            self._release_fds(s)
            self._ended(s)

    def _release_fds(self, s: Session) -> None:
        loop = asyncio.get_running_loop()
        for fd in list(s.readers):
            loop.remove_reader(fd)
            if fd != s.stdin_fd:
                self._close_fd(s, fd)
        s.readers.clear()
        s.paused.clear()
        if s.writing and s.stdin_fd >= 0:
            loop.remove_writer(s.stdin_fd)
            s.writing = False
        if s.stdin_fd >= 0:
            self._close_fd(s, s.stdin_fd)
            s.stdin_fd = -1
        s.drained.set()

    def _close(self, s: Session) -> None:
        if s.closing:
            return
        s.closing = True
        assert self._tg is not None
        self._tg.create_task(self._stop_session(s))

    async def _stop_session(self, s: Session) -> None:
        if s.returncode is None:
            self._signal(s, signal.SIGHUP if s.pty else signal.SIGTERM)
            self._signal(s, signal.SIGTERM)
            deadline = self.clock() + self.grace_s
            while s.returncode is None and self.clock() < deadline:
                await asyncio.sleep(0.05)
            if s.returncode is None:
                log.warning("session %s: did not stop within %.0fs; killing it", s.id, self.grace_s)
                self._signal(s, signal.SIGKILL)
            while not s.finished:
                await asyncio.sleep(0.05)
        self.sessions.pop(s.id, None)
        if s.held is not None:
            await s.held.forget()
