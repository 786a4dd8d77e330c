"""Starting a shim: forked by the runner's fork server, else its own interpreter.

The fork server (`runner/shimfork.py`, whose docstring says why and how) is
started on the first shim a process asks for and kept while it lives; each
shim then costs a fork of it, its command line the server's. Should the
server fail (it died, it does not answer), it is started again on the next
request, and this request's shim starts as before, as `python -I -S
shim.py DIR`: a shim is never refused for the server's sake. Either way the
caller gets the shim's process and the pipe its one-line answer comes on.

A forked shim is not our child: the server reaps it, or, once the server
has gone, whoever adopts orphans. `ForkedShim` watches it through a pidfd
opened as soon as its pid is known, and answers as much of Popen's face as
the shim's owners use (poll, wait, kill, pid).
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Protocol

from roost.proc import spawn
from roost.proc.wait import exited, readable
from roost.runner import shim, shimfork

log = logging.getLogger("roost.runner")

# A fork takes milliseconds; an answer this late means the server is stuck.
FORK_TIMEOUT_S = 5.0


class ShimProcess(Protocol):
    """What a shim's owner needs of its process (subprocess.Popen has it)."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


class ForkedShim:
    """A shim the fork server forked, watched through a pidfd."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # it ended and was reaped already
            self._pidfd = -1
            self.returncode = 0

    def _ended(self, timeout: float | None) -> bool:
        if self._pidfd < 0:
            return True
        ready, _, _ = select.select([self._pidfd], [], [], timeout)
        if not ready:
            return False
        os.close(self._pidfd)
        self._pidfd = -1
        # Its parent, the server, has the status; a shim's tells nothing
        # its socket did not (the instance's exit is a frame of its own).
        self.returncode = 0
        return True

    def poll(self) -> int | None:
        return self.returncode if self._ended(0) else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended(timeout):
            raise subprocess.TimeoutExpired(f"shim {self.pid}", timeout or 0.0)
        return 0

    def kill(self) -> None:
        if self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    async def exited(self) -> None:
        if self._pidfd >= 0:
            await readable(self._pidfd)
            self._ended(0)

    def __del__(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)


async def gone(proc: ShimProcess) -> None:
    """Return once the shim's process has ended (a child of ours is left
    for its owner to reap)."""
    if isinstance(proc, ForkedShim):
        await proc.exited()
    else:
        await exited(proc.pid)


class ForkServer:
    """This process's handle on its fork server (one per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = 0

    @property
    def pid(self) -> int:
        """The server's pid while this process has one, else 0."""
        proc = self._proc
        return proc.pid if proc is not None and self._owner == os.getpid() else 0

    def _ensure(self) -> socket.socket:
        if (
            self._sock is not None
            and self._proc is not None
            and self._owner == os.getpid()
            and self._proc.poll() is None
        ):
            return self._sock
        self.reset()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # Its own session, no death signal: it ends when `ours` closes,
            # whatever thread started it (a death signal follows the thread).
            self._proc = spawn.popen(
                [sys.executable, "-I", "-S", shimfork.__file__],
                env={"PATH": os.defpath},
                cwd="/",
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                setup=spawn.child_setup(die_with_parent=False),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(FORK_TIMEOUT_S)
        self._sock, self._owner = ours, os.getpid()
        return ours

    def fork(self, directory: Path, answer: int) -> int:
        """Have the server fork a shim for `directory` whose answer goes to
        `answer` (a pipe's write end); its pid. OSError when it cannot."""
        with self._lock:
            try:
                sock = self._ensure()
                fds = array.array("i", [answer])
                sock.sendmsg(
                    [str(directory).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]
                )
                reply = sock.recv(256)
                if not reply:
                    raise OSError("the shims' fork server went away")
            except OSError:
                self.reset()  # started again on the next request
                raise
        if not reply.isdigit():  # it refused this one request
            raise OSError(reply.decode("utf-8", "replace"))
        return int(reply)

    def reset(self) -> None:
        """End the server, if any (its shims go on: they are not its group)."""
        sock, proc, self._sock, self._proc = self._sock, self._proc, None, None
        if sock is not None:
            sock.close()
        if proc is not None and self._owner == os.getpid():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


SERVER = ForkServer()


def start(directory: Path) -> tuple[ShimProcess, IO[bytes]]:
    """Start the shim for `directory` (its spec written); (its process, the
    pipe its one-line answer comes on). OSError when neither way works."""
    read_end, write_end = os.pipe()
    try:
        pid = SERVER.fork(directory, write_end)
    except OSError as exc:
        os.close(read_end)
        log.warning("the shims' fork server failed (%s): the shim runs on its own", exc)
    else:
        return ForkedShim(pid), os.fdopen(read_end, "rb")
    finally:
        os.close(write_end)
    popen = spawn.popen(
        [sys.executable, "-I", "-S", shim.__file__, str(directory)],
        env={"PATH": os.defpath},
        cwd="/",
        stderr=subprocess.DEVNULL,
        setup=spawn.child_setup(die_with_parent=False),
    )
    assert popen.stdout is not None
    return popen, popen.stdout
