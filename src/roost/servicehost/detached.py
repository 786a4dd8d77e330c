"""Server processes that outlive the servicehost daemon.

Theory of operation. A PostgreSQL or Redis server is never the daemon's
child: `launch` starts it through `setsid --fork`, so the server runs in a
session of its own, with no parent-death signal (the launcher's dies with
the launcher), and is reparented at once to the nearest subreaper (`roost
up`) or to init, which reap it when it ends. So a SIGKILL, a crash or a
hand-over of the daemon leaves it serving, and asyncio, which kills the
children it owns when its loop closes, never owns it. Each server records
its own pid where it always does (postmaster.pid, Redis's pidfile); a new
daemon reads that record and takes the process on (`adoptable` says
whether the process behind a recorded pid is really that server: a pid is
reused by unrelated processes, and such a one is never touched).

The daemon holds a pidfd for each server (`Proc`): it learns of the exit
from it and signals through it, so a signal can never reach a process that
merely took a dead server's pid. The exit status belongs to whoever reaps
the server (up or init): the daemon knows only that it ended, and reports
the last lines of its log instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import psutil

from roost.proc import spawn as proc
from roost.proc.wait import kill_and_reap, readable
from roost.servicehost.spawn import BASE_ENV
from roost.servicehost.user import ServiceUser

LAUNCH_TIMEOUT_S = 30.0
LOG_TAIL_BYTES = 4096
LOG_TAIL_LINES = 8
# The sh between setsid and the server says the server's pid (its own,
# which exec keeps), then becomes the server, its output going to the log.
_REPORT_AND_EXEC = 'echo $$; exec "$@" 1>&2'


class Proc:
    """A running server by its pidfd: its exit, and signals only to it."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd

    @classmethod
    def open(cls, pid: int) -> Proc | None:
        """The process `pid`, or None when it has already gone."""
        try:
            return cls(pid, os.pidfd_open(pid))
        except ProcessLookupError:
            return None

    def signal(self, sig: int) -> bool:
        """Send `sig` to this process alone; False when it has exited."""
        try:
            signal.pidfd_send_signal(self.fd, sig)
        except (ProcessLookupError, OSError):
            return False
        return True

    async def exited(self) -> None:
        """Return once the process has exited (the pidfd turns readable)."""
        await readable(self.fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


async def launch(argv: Sequence[str], user: ServiceUser, log_file: Path, cwd: Path) -> int:
    """Start `argv` as `user` in `cwd`, detached (module docstring), output
    appended to `log_file`; its pid. OSError when it could not be started."""
    setsid = shutil.which("setsid", path=BASE_ENV["PATH"])
    if setsid is None:
        raise OSError("setsid (util-linux) is not installed")
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        # A Popen, not an asyncio child: it closes every other descriptor in
        # the child (uvloop's children inherit some of the loop's), so no
        # socket of the daemon lives on in a server after the daemon.
        launcher = proc.popen(
            [setsid, "--fork", "/bin/sh", "-c", _REPORT_AND_EXEC, "sh", *argv],
            env=BASE_ENV, cwd=cwd, stdout=subprocess.PIPE, stderr=fd, setup=user.setup(),
        )  # fmt: skip
    finally:
        os.close(fd)
    try:
        # EOF once the server has exec'd; the launcher has exited by then.
        said, _ = await asyncio.to_thread(launcher.communicate, timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_and_reap(launcher)
        raise OSError(f"{argv[0]} did not start within {LAUNCH_TIMEOUT_S:g}s") from None
    status = launcher.returncode
    text = said.decode(errors="replace").strip()
    if status != 0 or not text.isdigit():
        raise OSError(f"could not start {argv[0]} (setsid status {status}, said {text!r})")
    return int(text)


def adoptable(pid: int, exe: str, cwd: Path, uid: int) -> str:
    """Why process `pid` is not a server running `exe` in `cwd` as `uid`
    ("" when it is one): what a recorded pid must show before it is adopted."""
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            if p.status() == psutil.STATUS_ZOMBIE:
                return f"pid {pid} has exited"
            if os.path.realpath(p.exe()) != os.path.realpath(exe):
                return f"pid {pid} runs {p.exe()}, not {exe}"
            if os.path.realpath(p.cwd()) != os.path.realpath(cwd):
                return f"pid {pid} runs in {p.cwd()}, not {cwd}"
            if p.uids().real != uid:
                return f"pid {pid} runs as uid {p.uids().real}, not {uid}"
    except psutil.NoSuchProcess:
        return f"pid {pid} is not running"
    except psutil.AccessDenied as exc:
        # Neither adopted nor judged stale: the start fails and is retried.
        raise OSError(f"pid {pid} cannot be inspected ({exc})") from None
    return ""


def cmdline(pid: int) -> list[str]:
    """Process `pid`'s command line ([] when it is gone)."""
    try:
        return list(psutil.Process(pid).cmdline())
    except psutil.Error:
        return []


async def retire(pid: int, sig: int, grace: float) -> None:
    """Stop a server found with settings other than the daemon's: `sig`,
    then SIGKILL after `grace`; returns once it has exited."""
    p = Proc.open(pid)
    if p is None:
        return
    try:
        p.signal(sig)
        try:
            async with asyncio.timeout(grace):
                await p.exited()
        except TimeoutError:
            p.signal(signal.SIGKILL)
            await p.exited()
    finally:
        p.close()


def started_at(pid: int) -> float:
    """When process `pid` started (epoch seconds); 0 when it is gone."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


def log_tail(log_file: Path) -> list[str]:
    """The last lines of a server's log: what it said before it ended."""
    try:
        with open(log_file, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - LOG_TAIL_BYTES))
            data = fh.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]
