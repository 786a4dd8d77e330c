"""The data proxy's HAProxy as a process that outlives the runner daemon.

Theory of operation. Apps hold database connections through the runner's
data proxy (runner/dataproxy.py); a runner restart (a hand-over, a crash,
an upgrade) must not cut them (issue 20). So HAProxy is never the daemon's
child for long: it is started master-worker in daemon mode (`-W -D -p
PIDFILE`), whose master forks, makes a session of its own (no process
group or parent-death signal of the runner's reaches it) and records its
pid in the pidfile; the foreground process exits at once, reaped by the
runner. The master is reparented to the nearest subreaper (`roost up`) or
init, which reap it when it ends, so `roost up`'s full stop still ends it.

The daemon holds a pidfd of the master (`Master`): it learns of the exit
from it and signals through it, so a signal never reaches a process that
merely took a dead master's pid. A new daemon finds the master through the
pidfile and adopts it only if the process behind that pid is HAProxy run on
this very configuration file (`adoptable`): pids are reused. A reload is
SIGUSR2 to the master, which keeps its pid; a full stop of the runner is
SIGTERM to it (the master stops its workers), SIGKILL after a grace; a
hand-over only lets go of the pidfd.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
from pathlib import Path

import psutil

from roost.proc import spawn
from roost.proc.wait import readable

START_TIMEOUT_S = 30.0
PIDFILE_POLL_S = 0.02


class Master:
    """HAProxy's master process by its pidfd."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd

    @classmethod
    def open(cls, pid: int) -> Master | None:
        try:
            return cls(pid, os.pidfd_open(pid))
        except (ProcessLookupError, OSError):
            return None

    @property
    def running(self) -> bool:
        """False once the master has exited (its pidfd turns readable)."""
        if self.fd < 0:
            return False
        readable, _, _ = select.select([self.fd], [], [], 0)
        return not readable

    def signal(self, sig: int) -> bool:
        """`sig` to the master alone; False when it has exited."""
        try:
            signal.pidfd_send_signal(self.fd, sig)
        except OSError:
            return False
        return True

    async def exited(self) -> None:
        await readable(self.fd)

    async def stop(self, grace: float) -> None:
        """TERM (the master stops its workers), KILL after `grace`; returns
        once it has exited."""
        if self.signal(signal.SIGTERM):
            try:
                async with asyncio.timeout(grace):
                    await self.exited()
            except TimeoutError:
                self.signal(signal.SIGKILL)
                await self.exited()
        self.close()

    def close(self) -> None:
        """Let go of it (a hand-over: it keeps running)."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def adoptable(pid: int, binary: str, config: Path) -> str:
    """Why process `pid` is not an HAProxy master serving `config` ("" when
    it is one): what a recorded pid must show before it is adopted."""
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            if p.status() == psutil.STATUS_ZOMBIE:
                return f"pid {pid} has exited"
            if os.path.realpath(p.exe()) != os.path.realpath(binary):
                return f"pid {pid} runs {p.exe()}, not {binary}"
            argv = p.cmdline()
    except psutil.NoSuchProcess:
        return f"pid {pid} is not running"
    except psutil.AccessDenied as exc:
        return f"pid {pid} cannot be inspected ({exc})"
    if str(config) not in argv or "-W" not in argv:
        return f"pid {pid} is not the master-worker HAProxy of {config}"
    return ""


def find(pidfile: Path, binary: str, config: Path) -> Master | None:
    """The master a predecessor left running on `config`, or None."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if adoptable(pid, binary, config):
        return None
    master = Master.open(pid)
    if master is not None and adoptable(pid, binary, config):
        master.close()  # it ended (and the pid was taken) between the two looks
        return None
    return master


async def launch(binary: str, config: Path, pidfile: Path, log_file: Path, home: Path) -> Master:
    """Start HAProxy detached on `config`; its master. OSError when it did
    not start (what it said is in `log_file`)."""
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()
    proc = await spawn.start_logged(
        [binary, "-W", "-D", "-p", str(pidfile), "-f", str(config)],
        log_file,
        env={"PATH": "/usr/sbin:/usr/bin:/bin"},
        cwd=home,
    )
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            status = await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise OSError(f"haproxy did not start within {START_TIMEOUT_S:g}s") from None
    if status != 0:
        raise OSError(f"haproxy exited with status {status} as it started (see {log_file})")
    # The daemonized master writes its pid after the foreground has exited.
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    while (master := find(pidfile, binary, config)) is None:
        if asyncio.get_running_loop().time() > deadline:
            raise OSError(f"haproxy started but its master is not running (see {log_file})")
        await asyncio.sleep(PIDFILE_POLL_S)
    return master
