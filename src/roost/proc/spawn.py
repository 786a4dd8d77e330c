"""Starting a child process: the one way every daemon does it.

Every child Roost starts (a role under `roost up`, a router worker, a
PostgreSQL or Redis server, a build step, an app instance, a `run` session)
goes through `ChildSetup`, the code that runs in the child between fork and
exec. In this order:

  1. `setsid()`: its own session, so its own process group. Stopping it
     signals the group, so a server's workers or a command's pipeline stop
     with it (and a ^C meant for us never reaches it);
  2. with a pty, take fd 0 as the controlling terminal (job control, ^C and
     window changes then work inside the session);
  3. `enter`, still as root: what a tenant launch needs (join its cgroup,
     shield bubblewrap from signals; `roost.tenant.launch.Prepared.preexec`);
  4. the umask, then the uid drop (no supplementary groups);
  5. PR_SET_PDEATHSIG=SIGKILL, after the uid change, which clears it; if the
     parent died before that (its signal will never come) the child exits
     at once. So a child dies with its owner even when the owner is
     SIGKILLed and has no chance to stop it. The one exception is a child
     made to outlive its owner (`die_with_parent=False`): a runner's
     per-instance shims (`roost.runner.shim`), which its successor adopts.

The death signal fires when the *thread* that forked exits: spawn from the
event loop's thread, never from a worker thread. Only plain os calls run in
the child (prctl is looked up at import, not after the fork).
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import os
import signal
import subprocess
import termios
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from roost.proc.stop import signal_group

PR_SET_PDEATHSIG = 1

# Resolved before any fork: the child must not do dynamic symbol lookups.
_prctl = ctypes.CDLL(None, use_errno=True).prctl

# What a child's stdin/stdout/stderr may be: PIPE, DEVNULL, STDOUT, an fd or a file.
Stdio = int | IO[Any] | None


@dataclass(frozen=True)
class ChildSetup:
    """A `preexec_fn`: what the child does before exec (see the module docstring)."""

    parent_pid: int
    ctty: bool = False
    enter: Callable[[], None] | None = None
    umask: int | None = None
    uid: int | None = None
    gid: int | None = None
    die_with_parent: bool = True

    def __call__(self) -> None:
        os.setsid()
        if self.ctty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if self.enter is not None:
            self.enter()
        if self.umask is not None:
            os.umask(self.umask)
        if self.uid is not None:
            os.setgroups([])
            os.setgid(self.gid if self.gid is not None else self.uid)
            os.setuid(self.uid)
        if not self.die_with_parent:
            return
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != self.parent_pid:
            os._exit(1)  # the parent is already gone: the signal will never come


def child_setup(
    *,
    ctty: bool = False,
    enter: Callable[[], None] | None = None,
    umask: int | None = None,
    uid: int | None = None,
    gid: int | None = None,
    die_with_parent: bool = True,
) -> ChildSetup:
    """The set-up for a child of this process (call it in the spawning process)."""
    return ChildSetup(
        os.getpid(),
        ctty=ctty,
        enter=enter,
        umask=umask,
        uid=uid,
        gid=gid,
        die_with_parent=die_with_parent,
    )


async def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    stdin: Stdio = subprocess.DEVNULL,
    stdout: Stdio = None,
    stderr: Stdio = None,
    setup: ChildSetup | None = None,
    pass_fds: Sequence[int] = (),
) -> asyncio.subprocess.Process:
    """Start `argv` as an asyncio child (reaped by the loop's child watcher);
    of our file descriptors beyond 0-2 it inherits `pass_fds` only.

    Cancelled while it starts, the child may be running already (asyncio
    forks and execs it before it connects its pipes) and may have started
    children of its own, in its group: asyncio would SIGKILL the child
    alone and leave them. So the start is shielded and, once it is done,
    the child's whole group is killed and the child reaped.
    """
    starting = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            *argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            # uvloop takes no user=/group=/start_new_session=: all of it is here.
            preexec_fn=setup or child_setup(),
            pass_fds=tuple(pass_fds),
        )
    )
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        await asyncio.shield(_kill_once_started(starting))
        raise


async def _kill_once_started(starting: asyncio.Future[asyncio.subprocess.Process]) -> None:
    try:
        child = await starting
    except Exception:
        return  # it never started
    signal_group(child.pid, signal.SIGKILL)
    await child.wait()


async def start_logged(
    argv: Sequence[str],
    log_file: Path,
    *,
    env: Mapping[str, str],
    cwd: Path,
    setup: ChildSetup | None = None,
) -> asyncio.subprocess.Process:
    """Start a server with its output (stdout and stderr) appended to
    `log_file` (made 0600: a server's log may say what it was given)."""
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return await start(argv, env=env, cwd=cwd, stdout=fd, stderr=subprocess.STDOUT, setup=setup)
    finally:
        os.close(fd)


def popen(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | str,
    stdin: Stdio = subprocess.DEVNULL,
    stdout: Stdio = subprocess.PIPE,
    stderr: Stdio = subprocess.PIPE,
    setup: ChildSetup | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` as a Popen child, for owners that reap it themselves
    (`roost.proc.wait.wait_group`); raises OSError or SubprocessError."""
    return subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=str(cwd),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        preexec_fn=setup or child_setup(),
    )
