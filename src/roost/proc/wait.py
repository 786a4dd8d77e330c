"""Waiting for children: pidfds, group-aware reaping, adopted orphans.

A child is waited for without reaping it first (`exited`): while it is a
zombie its pid, and so its process group id, cannot be reused, so whatever
is left of its group can still be SIGKILLed safely before the reap
(`wait_group`). A command's leftovers never outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess

from roost.proc.stop import signal_group

PR_SET_CHILD_SUBREAPER = 36
# Without pidfds (old kernels), how often to peek at the child.
POLL_S = 0.05


async def exited(pid: int) -> None:
    """Return once child `pid` has exited, without reaping it (it stays a zombie).

    A pidfd when the kernel has them; else peek with WNOWAIT every POLL_S.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        while os.waitid(os.P_PID, pid, flags) is None:
            await asyncio.sleep(POLL_S)
        return
    try:
        await readable(pidfd)
    finally:
        os.close(pidfd)


async def readable(fd: int) -> None:
    """Return once `fd` is readable (a pidfd: once its process has exited)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await done
    finally:
        loop.remove_reader(fd)


async def wait_group(popen: subprocess.Popen[bytes]) -> int:
    """Wait for a group leader we reap ourselves (`roost.proc.spawn.popen`):
    once it has exited, SIGKILL what is left of its group, then reap it."""
    await exited(popen.pid)
    signal_group(popen.pid, signal.SIGKILL)
    return popen.wait()


def kill_and_reap(popen: subprocess.Popen[bytes]) -> int:
    """For an owner that is cancelled before its child ended: never leave it behind."""
    signal_group(popen.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        popen.kill()  # a leader that left its group
    return popen.wait()


def become_subreaper() -> bool:
    """Adopt orphaned descendants (e.g. gunicorn workers whose master was
    killed) instead of letting init have them, so they can be stopped too."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
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
