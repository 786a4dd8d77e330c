"""This host's SeaweedFS processes, kept running by the role that owns them.

Theory of operation. A role (controller, servicehost, runner) that finds
its parts in DATA/appdata.json (roost.datadir.weedplan) runs them under
`running()`: each process is started detached (a session of its own, no
parent-death signal), so a daemon that hands over, crashes or is killed
leaves the masters, volume servers and, above all, the FUSE mount that
running sandboxes bind, serving. Its successor adopts them: a process whose
command line is exactly the one the plan renders (it names this host's
address and DATA, so no other host's, even in the same PID namespace) is
taken as running and watched, never started twice; a master, filer or
volume server an older release started in this DATA with other flags
(`supersedes`: the same address and port) is ended before the plan's
starts, which it would keep from binding. A process that exits
is started again after the toolkit's backoff; a mount whose process died
leaves a dead FUSE entry ("Transport endpoint is not connected"), which is
detached first (`umount -l`: sandboxes holding it keep their view until
they restart).

Leaving `running()` stops them (the mount first, then the servers in
reverse order) unless `keep()` says the daemon is handing over, or the
daemon's body failed: a crash leaves them as a SIGKILL would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psutil

from roost.datadir import filerfront, seaweed, weedplan, weedwatch
from roost.datadir.seaweed import Endpoint
from roost.datadir.weedplan import PLAN_FILE, FilerStore, Program, WeedPlan
from roost.privatefile import replace_private
from roost.proc.backoff import Backoff
from roost.proc.exits import ConfigError

log = logging.getLogger("roost.datadir.weed")

TICK_S = 1.0
STOP_GRACE_S = 10.0
# A mount process that has not mounted by then is ended and started again.
MOUNT_GRACE_S = 60.0
BACKOFF = Backoff(base_s=0.5, max_s=15.0, reset_after_s=30.0)
# With two filers, the mount and the second filer wait this long at most
# for the first one to answer before they are started: the mount's front
# keeps a session where it began (filerfront.py), and two filers started
# at once on a fresh shared store each write their own id into it
# (`filer.store.id`, weed/filer/filer.go: the last write wins), so they
# run with different ids, take each other for another store and replay
# each other's changes into the one they share.
FIRST_FILER_WAIT_S = 60.0
# The S3 gateway too: its front would hand it the second filer while the
# first is not up yet, and it would stay there (filerfront.py).
GATED = ("filer", "s3", "mount")


def load(data_dir: Path) -> WeedPlan | None:
    """This host's part of the shared tree (None: the bundle gave it none)."""
    path = data_dir / PLAN_FILE
    try:
        plan = msgspec.json.decode(path.read_bytes(), type=WeedPlan)
    except FileNotFoundError:
        return None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not plan.host:
        raise ConfigError(f"{path} names no host")
    return plan


def find(argv: list[str]) -> psutil.Process | None:
    """A live process running exactly `argv` (left by an earlier daemon)."""
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["cmdline"] == argv and p.info["status"] != psutil.STATUS_ZOMBIE:
            return p
    return None


# Servers whose flags a release may change (seaweed.py): one left running
# by an older release's daemon that handed over is not adopted (its command
# line is not the plan's) and would keep the port the new one needs, serving
# unwatched while the new one failed to bind. It is ended before the new one
# starts (a few seconds without it). Never the mount: sandboxes bind it.
SUPERSEDED = ("master", "filer", "volume")


def supersedes(wanted: list[str], running: list[str]) -> bool:
    """Is `running` another command line for the server `wanted` starts:
    weed's same subcommand on the same address and port (so on this host,
    holding its port), with other flags?"""
    if running == wanted or len(running) < 2 or len(wanted) < 2:
        return False
    if Path(running[0]).name != Path(wanted[0]).name or running[1] != wanted[1]:
        return False

    def place(argv: list[str]) -> set[str]:
        return {a for a in argv if a.startswith(("-ip=", "-port="))}

    return len(place(wanted)) == 2 and place(running) == place(wanted)


def end_superseded(argv: list[str], home: Path) -> list[int]:
    """End (TERM, then KILL after 15 s) every process `argv` supersedes that
    runs in `home` (DATA/weed, where every release starts them: so never
    another host's or another cluster's, whatever its address); their pids."""
    ended = []
    for p in psutil.process_iter(["cmdline", "status", "cwd"]):
        cmdline = p.info["cmdline"] or []
        if p.info["status"] == psutil.STATUS_ZOMBIE or not supersedes(argv, cmdline):
            continue
        if p.info["cwd"] is None or Path(p.info["cwd"]) != home:
            continue
        log.warning("weed %s: ending pid %d, started with other flags", argv[1], p.pid)
        _signal(p, signal.SIGTERM)
        try:
            p.wait(15)
        except psutil.TimeoutExpired:
            _signal(p, signal.SIGKILL)
            with contextlib.suppress(psutil.Error):
                p.wait(5)
        except psutil.Error:
            pass
        ended.append(p.pid)
    return ended


def _alive(p: subprocess.Popen[bytes] | psutil.Process) -> bool:
    if isinstance(p, subprocess.Popen):
        return p.poll() is None
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(p: subprocess.Popen[bytes] | psutil.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, psutil.Error):
        p.send_signal(sig)


def _mount_entry(mountpoint: Path) -> bool:
    """Is there a mount at `mountpoint` at all (live or dead)?"""
    target = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mounts") as fh:
            return any(line.split()[1] == target for line in fh)
    except OSError:
        return False


def detach(mountpoint: Path) -> None:
    subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=30)


def mounts_under(root: Path) -> list[psutil.Process]:
    """weed mount processes of an app's tree under `root`."""
    prefix = f"-dir={root}/"
    out = []
    for p in psutil.process_iter(["cmdline"]):
        argv = p.info["cmdline"] or []
        if len(argv) > 1 and argv[1] == "mount" and any(a.startswith(prefix) for a in argv):
            out.append(p)
    return out


def end(procs: list[psutil.Process]) -> None:
    argvs: dict[int, list[str]] = {}
    for p in procs:
        try:
            argvs[p.pid] = p.cmdline()
            p.terminate()
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(procs, timeout=STOP_GRACE_S)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            continue
    _, still = psutil.wait_procs(alive, timeout=5)
    left = {p.pid for p in still}
    for pid, argv in argvs.items():
        if pid not in left:
            seaweed.forget_mount_socket(argv)


def release_app_mounts(root: Path) -> None:
    """Every app's own mount under `root` (datadir/weedquota.py) unmounted
    and ended: before the tree's own mount, which they sit in."""
    procs = mounts_under(root)
    for p in procs:
        for a in p.info["cmdline"] or []:
            if a.startswith("-dir="):
                detach(Path(a.removeprefix("-dir=")))
    end(procs)


@dataclass
class Part:
    program: Program
    proc: subprocess.Popen[bytes] | psutil.Process | None = None
    failures: int = 0
    started: float = 0.0
    next_start: float = 0.0
    adopted: bool = False
    logs: list[str] = field(default_factory=list)


def mount_may_start(now: float, since: float, first_filer_answers: bool) -> bool:
    """Start the mount (or the second filer) now? With two filers, once the
    first answers, or FIRST_FILER_WAIT_S after this node began."""
    return first_filer_answers or now - since >= FIRST_FILER_WAIT_S


def _answers(at: Endpoint) -> bool:
    try:
        with socket.create_connection((at.ip, at.port), timeout=1.0):
            return True
    except OSError:
        return False


class WeedNode:
    def __init__(
        self,
        programs: list[Program],
        data_dir: Path,
        mountpoint: Path,
        first_filer: Endpoint | None = None,
    ) -> None:
        self.parts = [Part(p) for p in programs]
        self.home = weedplan.home(data_dir)
        self.mountpoint = mountpoint
        # The first filer's gRPC port, when there are two and this node
        # runs the mount or the second: what they wait for (GATED).
        self.first_filer = first_filer
        self.since: float | None = None

    @property
    def mounts(self) -> bool:
        return any(p.program.name == "mount" for p in self.parts)

    def _dirs(self) -> None:
        for sub in ("master", "filer", "volume", "mount-cache", "logs"):
            (self.home / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.mounts:
            self.mountpoint.mkdir(parents=True, exist_ok=True)

    def _launch(self, part: Part, now: float) -> None:
        argv = part.program.argv
        if part.program.name == "mount" and _mount_entry(self.mountpoint):
            detach(self.mountpoint)  # a dead mount: weed cannot mount over it
        logf = self.home / "logs" / f"{part.program.name}.log"
        fd = os.open(logf, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # A session of its own and no parent-death signal: it outlives
            # this daemon (module docstring); cwd its home, not the caller's.
            part.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                cwd=self.home, start_new_session=True, close_fds=True,
                env=seaweed.process_env(self.home / "logs"),
            )  # fmt: skip
        finally:
            os.close(fd)
        part.started = now
        log.info("weed %s started (pid %d)", part.program.name, part.proc.pid)

    def tick(self, now: float) -> None:
        """Adopt or start what is not running (its backoff permitting)."""
        for part in self.parts:
            if part.proc is not None and _alive(part.proc):
                if self._unmounted(part, now):
                    # Running, yet no mount here (hung, or its mount lives in
                    # another mount namespace): ended, to be started again.
                    log.warning("weed mount has not mounted %s; stopping it", self.mountpoint)
                    _signal(part.proc, signal.SIGTERM)
                continue
            if part.proc is not None:
                ran = now - part.started
                part.failures = BACKOFF.failures_after(part.failures, ran)
                part.next_start = now + BACKOFF.delay(part.failures)
                log.warning(
                    "weed %s exited after %.1fs; again in %.1fs (log: %s)",
                    part.program.name, ran, part.next_start - now,
                    self.home / "logs" / f"{part.program.name}.log",
                )  # fmt: skip
                part.proc = None
                seaweed.forget_mount_socket(part.program.argv)
            found = find(part.program.argv)
            if found is not None:
                part.proc, part.started, part.adopted = found, now, True
                log.info("weed %s adopted (pid %d)", part.program.name, found.pid)
                continue
            if part.program.name in GATED and not self._first_filer_ready(now):
                continue
            if now >= part.next_start:
                try:
                    if part.program.name in SUPERSEDED:
                        end_superseded(part.program.argv, self.home)
                    self._launch(part, now)
                except OSError as exc:
                    log.error("weed %s: cannot start: %s", part.program.name, exc)
                    part.failures += 1
                    part.next_start = now + BACKOFF.delay(part.failures)

    def _first_filer_ready(self, now: float) -> bool:
        if self.first_filer is None:
            return True
        if self.since is None:
            self.since = now
        answers = _answers(self.first_filer)
        if mount_may_start(now, self.since, answers):
            self.first_filer = None  # once: a later restart of the mount waits for nothing
            return True
        return False

    def _unmounted(self, part: Part, now: float) -> bool:
        return (
            part.program.name == "mount"
            and now - part.started > MOUNT_GRACE_S
            and not seaweed.is_mounted(self.mountpoint)
        )

    async def run(self) -> None:
        await asyncio.to_thread(self._dirs)
        while True:
            await asyncio.to_thread(self.tick, time.monotonic())
            await asyncio.sleep(TICK_S)

    async def wait_mounted(self, timeout: float) -> bool:
        """True once the mount answers (at once when this role mounts nothing)."""
        if not self.mounts:
            return True
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(seaweed.is_mounted, self.mountpoint):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.2)
        return True

    def stop(self) -> None:
        """The mount first (nothing above it then), the servers in reverse order."""
        for part in reversed(self.parts):
            if part.proc is None or not _alive(part.proc):
                continue
            if part.program.name == "mount":
                release_app_mounts(self.mountpoint)
                r = subprocess.run(["umount", str(self.mountpoint)], capture_output=True)
                if r.returncode != 0:
                    detach(self.mountpoint)  # busy: a process still in it
            _signal(part.proc, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            while _alive(part.proc) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(part.proc):
                _signal(part.proc, signal.SIGKILL)
            if isinstance(part.proc, subprocess.Popen):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    part.proc.wait(5)
            if not _alive(part.proc):
                seaweed.forget_mount_socket(part.program.argv)
            log.info("weed %s stopped", part.program.name)


def write_store(plan: WeedPlan, role: str, data_dir: Path) -> None:
    """The filer's filer.toml (0600: the store's password, when shared) in
    its working directory, when this role runs the filer: where its store
    is and where it keeps S3 buckets. Written at every start, so an older
    cluster's filers take a new one when their role next starts them."""
    if "filer" not in weedplan.parts_for(plan, role):
        return
    try:
        text = weedplan.filer_toml(plan.store, weedplan.filer_dir(data_dir))
    except weedplan.PlanError as exc:
        raise ConfigError(f"{data_dir / PLAN_FILE}: {exc}") from None
    _write_private(weedplan.home(data_dir) / weedplan.STORE_FILE, text)


def _write_private(path: Path, text: str) -> None:
    replace_private(path, text)


def write_front(plan: WeedPlan, role: str, data_dir: Path) -> str:
    """The filer front's configuration, when this role runs one; the
    HAProxy binary it is run with ("" when none)."""
    if "front" not in weedplan.parts_for(plan, role):
        return ""
    haproxy = shutil.which("haproxy") or ""
    if not haproxy:
        raise ConfigError(
            f"the shared tree ({data_dir / PLAN_FILE}) has two filers, reached through "
            "HAProxy on this host: install haproxy"
        )
    _write_private(weedplan.home(data_dir) / filerfront.CONFIG_FILE, weedplan.front_config(plan))
    return haproxy


@contextlib.asynccontextmanager
async def running(
    data_dir: Path,
    role: str,
    mountpoint: Path | None,
    keep: Callable[[], bool],
    prepare_store: Callable[[FilerStore], Coroutine[Any, Any, None]] | None = None,
) -> AsyncIterator[WeedNode | None]:
    """This role's SeaweedFS parts on this host, kept running inside the
    block (None when it has none); stopped on leaving unless `keep()`.
    `prepare_store`: run beside them when this role runs a filer whose
    store is shared (the controller makes its database and role)."""
    plan = await asyncio.to_thread(load, data_dir)
    if plan is None or not weedplan.parts_for(plan, role):
        yield None
        return
    try:
        weed = seaweed.weed_binary()
    except FileNotFoundError as exc:
        raise ConfigError(f"the shared tree ({data_dir / PLAN_FILE}): {exc}") from None
    point = mountpoint or (data_dir / "appdata")
    await asyncio.to_thread(write_store, plan, role, data_dir)
    haproxy = await asyncio.to_thread(write_front, plan, role, data_dir)
    progs = weedplan.programs(plan, role, weed, data_dir, point, haproxy or "haproxy")
    first = None
    filers = weedplan.filers_of(plan)
    if haproxy or ("filer" in weedplan.parts_for(plan, role) and plan.host != filers[0]):
        first = Endpoint(filers[0], plan.filer_port + filerfront.GRPC_OFFSET)
    node = WeedNode(progs, data_dir, point, first)
    log.info("shared tree: %s runs %s", role, ", ".join(p.program.name for p in node.parts))
    tasks = [asyncio.create_task(node.run(), name="weed")]
    if prepare_store and plan.store and "filer" in weedplan.parts_for(plan, role):
        # The filers retry until their database and role exist.
        tasks.append(asyncio.create_task(prepare_store(plan.store), name="weed-store"))
    if "master" in weedplan.parts_for(plan, role):
        # The master here lets go of a silent host's volume server at once
        # (weedwatch.py), not after gRPC keepalive's 80 s.
        servers = [Endpoint(h, plan.volume_port) for h in plan.volumes]
        master = Endpoint(plan.host, plan.master_port)
        tasks.append(asyncio.create_task(weedwatch.watch(master, servers), name="weed-watch"))
    others = [Endpoint(h, plan.master_port) for h in plan.masters if h != plan.host]
    if others and {"filer", "volume"} & set(weedplan.parts_for(plan, role)):
        # This host's filer and volume server leave a silent master's host
        # for the new leader at once (weedwatch.py), not after keepalive.
        tasks.append(asyncio.create_task(weedwatch.watch_masters(others), name="weed-masters"))
    crashed = False
    try:
        yield node
    except BaseException:
        crashed = True  # as a SIGKILL would: the tree stays mounted
        raise
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not crashed and not keep():
            await asyncio.to_thread(node.stop)
