"""Child-process helpers shared by the daemons that own children.

The rule (trio's `_subprocess.py` style): a child is stopped with SIGTERM to
its process group, given a grace period, then SIGKILL; and on Linux each child
asks the kernel to SIGKILL it if its parent dies, so even a SIGKILLed owner
leaves no orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For preexec_fn: new process group, and SIGKILL when the parent exits."""
    os.setpgrp()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def terminate(proc: asyncio.subprocess.Process, grace: float) -> int:
    """TERM the child's process group, wait `grace`, then KILL it."""
    if proc.returncode is None:
        signal_group(proc.pid, signal.SIGTERM)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that arrives just as the process exits.
            async with asyncio.timeout(grace):
                await proc.wait()
        except TimeoutError:
            signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
    # Stragglers the child left in its group (e.g. gunicorn workers) go too.
    signal_group(proc.pid, signal.SIGKILL)
    return proc.returncode if proc.returncode is not None else -9


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt orphaned descendants (e.g. gunicorn workers whose master was
    killed) instead of letting init have them, so they can be stopped too."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def reap_adopted(known: set[int]) -> list[int]:
    """Reap exited children that are not our own (adopted orphans).

    Peeks with WNOWAIT first so the exit status of a child someone else waits
    for (asyncio's watcher) is never stolen.
    """
    reaped: list[int] = []
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return reaped
        if info is None or info.si_pid in known:
            return reaped
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, 0)
        reaped.append(info.si_pid)


def kill_descendants() -> list[str]:
    """SIGKILL every process below this one; returns what they were (name[pid])."""
    import psutil

    try:
        procs = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    names = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            names.append(f"{' '.join(p.cmdline()[:3]) or p.name()}[{p.pid}]")
            p.kill()
    psutil.wait_procs(procs, timeout=5)
    return names


async def exited(pid: int) -> None:
    """Return once child `pid` has exited, without reaping it (it stays a
    zombie, so its pid and process group id cannot be reused meanwhile).

    A pidfd when the kernel has them; else peek with WNOWAIT every 50 ms.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        while os.waitid(os.P_PID, pid, flags) is None:
            await asyncio.sleep(0.05)
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, wake)
    try:
        await done
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
