"""Kernel-enforced limits for tenant processes: one cgroup per instance, session or build.

Theory of operation. A cgroup is made before the process starts, its limits
written, and the child moves itself into it before it execs (the spawner
calls `Cgroup.attach_self` between fork and exec), so every descendant,
setsid or not, is inside from its first instruction. The cgroup is how the
owner learns that the kernel OOM-killed something (the `oom_kill` counter),
reads memory use, and kills everything at the end; it is removed once empty.

Both hierarchies are supported, chosen by what the host mounts:

  v2 (unified; current distributions)   one directory; memory.max,
       memory.swap.max, cpu.weight, pids.max; memory.events for OOM kills;
       cgroup.kill kills the whole tree at once.
  v1 (this machine and CI: memory, cpu, pids mounted separately)   one
       directory per controller; memory.limit_in_bytes (and memsw when swap
       accounting is on), cpu.shares, pids.max; memory.oom_control for OOM
       kills; no cgroup.kill, so the owner SIGKILLs the listed pids until
       the group is empty (a fork racing the loop lands in the same group and
       is caught on the next pass).

A daemon that finds no hierarchy under /sys/fs/cgroup (started by `ip netns
exec`, which mounts a fresh /sys) mounts the one its /proc/self/cgroup names
under /run/roost/cgroup, in its own mount namespace.

Our cgroups live under the cgroup the daemon itself was started in, in a
`roost-<owner>` directory (one per runner or builder on a host, since tests
run several), so a host's limits on the daemon also bound its tenants, and
one daemon's start-up sweep of leftovers from a crash never touches another's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Version = Literal[1, 2]
V1_CONTROLLERS = ("memory", "cpu", "pids")
_UNIT = re.compile(r"[A-Za-z0-9._-]{1,128}")
# cpu.shares (v1) is 1024 for a default weight of 100 (v2).
V1_SHARES_PER_WEIGHT = 1024 / 100
KILL_PASSES = 50


class CgroupError(RuntimeError):
    """Cgroups are missing, or a cgroup could not be made or limited."""


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 0  # 0: no memory limit
    pids: int = 0  # 0: no pids limit
    cpu_weight: int = 100  # 1..10000, as cgroup v2's cpu.weight


def limit_files(version: Version, limits: Limits) -> list[tuple[str, str, str]]:
    """(controller, file, value) to write for `limits` (pure; v2 has one controller '')."""
    out: list[tuple[str, str, str]] = []
    weight = min(max(limits.cpu_weight, 1), 10000)
    if version == 2:
        if limits.memory_mb:
            out.append(("", "memory.max", str(limits.memory_mb << 20)))
            out.append(("", "memory.swap.max", "0"))
        out.append(("", "cpu.weight", str(weight)))
        if limits.pids:
            out.append(("", "pids.max", str(limits.pids)))
        return out
    if limits.memory_mb:
        out.append(("memory", "memory.limit_in_bytes", str(limits.memory_mb << 20)))
        # memsw exists only with swap accounting; the writer skips it if absent.
        out.append(("memory", "memory.memsw.limit_in_bytes", str(limits.memory_mb << 20)))
    out.append(("cpu", "cpu.shares", str(max(2, round(weight * V1_SHARES_PER_WEIGHT)))))
    if limits.pids:
        out.append(("pids", "pids.max", str(limits.pids)))
    return out


def parse_oom_kills(version: Version, text: str) -> int:
    """The `oom_kill` count from memory.events (v2) or memory.oom_control (v1)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            with contextlib.suppress(ValueError):
                return int(value)
    return 0


def own_cgroup_paths(proc_cgroup: str) -> dict[str, str]:
    """controller -> path of this process's cgroup, from /proc/self/cgroup text.

    v2's line is `0::/path` and is keyed ''.
    """
    out: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


@dataclass(frozen=True)
class Hierarchy:
    """Where this daemon's tenant cgroups go: one base directory per controller."""

    version: Version
    bases: dict[str, Path]  # controller ('' for v2) -> our base directory

    @classmethod
    def detect(cls, owner: str, root: Path = Path("/sys/fs/cgroup")) -> Hierarchy:
        """The hierarchy this host mounts, with our base under our own cgroup."""
        if not _UNIT.fullmatch(owner):
            raise CgroupError(f"bad cgroup owner name {owner!r}")
        own = own_cgroup_paths(Path("/proc/self/cgroup").read_text())
        root = usable_root(root, own)
        name = f"roost-{owner}"
        if (root / "cgroup.controllers").is_file():
            here = root / own.get("", "/").lstrip("/")
            # A v2 cgroup with processes in it may not enable controllers for
            # its children ("no internal processes"): put ours beside the
            # daemon's when it sits in a leaf it shares.
            base = here / name
            if (here / "cgroup.procs").read_text().strip() and here != root:
                base = here.parent / name
            return cls(2, {"": base})
        bases: dict[str, Path] = {}
        for c in V1_CONTROLLERS:
            mount = root / c
            if not (mount / "cgroup.procs").is_file():
                raise CgroupError(f"cgroup v1 controller {c!r} is not mounted at {mount}")
            bases[c] = mount / own.get(c, "/").lstrip("/") / name
        return cls(1, bases)

    def setup(self) -> None:
        """Make our base directories (and, on v2, delegate the controllers)."""
        for base in self.bases.values():
            base.mkdir(parents=True, exist_ok=True)
        if self.version == 2:
            base = self.bases[""]
            _enable_controllers(base.parent)
            _enable_controllers(base)

    def cgroup(self, unit: str) -> Cgroup:
        if not _UNIT.fullmatch(unit) or unit in (".", ".."):
            raise CgroupError(f"bad cgroup name {unit!r}")
        return Cgroup(self.version, {c: b / unit for c, b in self.bases.items()})

    def leftovers(self) -> list[Cgroup]:
        """Cgroups a previous run of this owner left (a crash): to kill and remove."""
        units: set[str] = set()
        for base in self.bases.values():
            with contextlib.suppress(FileNotFoundError):
                units.update(p.name for p in base.iterdir() if p.is_dir())
        return [self.cgroup(u) for u in sorted(units)]


# Where we mount the hierarchies ourselves when /sys/fs/cgroup does not show
# them: a daemon started by `ip netns exec` (a cluster host in the tests, or
# an operator's network namespace) gets a fresh /sys without its cgroup mounts.
SELF_MOUNT_ROOT = Path("/run/roost/cgroup")


def usable_root(root: Path, own: dict[str, str]) -> Path:
    """`root` when it holds the hierarchies; else mount them (as root) and say where.

    Which to mount follows /proc/self/cgroup: v1 controllers listed there are
    v1 hierarchies (mounting one again attaches to the same hierarchy, so
    limits set here are the host's); a lone `0::` line is cgroup v2.
    """
    if (root / "cgroup.controllers").is_file():
        return root
    if all((root / c / "cgroup.procs").is_file() for c in V1_CONTROLLERS):
        return root
    v1 = [c for c in V1_CONTROLLERS if c in own]
    if not v1:
        _mount("cgroup2", "", SELF_MOUNT_ROOT)
        return SELF_MOUNT_ROOT
    for c in V1_CONTROLLERS:
        _mount("cgroup", c, SELF_MOUNT_ROOT / c)
    return SELF_MOUNT_ROOT


def _mount(fstype: str, option: str, where: Path) -> None:
    if os.path.ismount(where):
        return
    where.mkdir(parents=True, exist_ok=True)
    argv = ["mount", "-t", fstype, *(["-o", option] if option else []), fstype, str(where)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CgroupError(
            f"/sys/fs/cgroup has no cgroup hierarchy and mounting one at {where} "
            f"failed: {proc.stderr.strip()}"
        )


def _enable_controllers(path: Path) -> None:
    wanted = {"memory", "cpu", "pids"}
    available = set((path / "cgroup.controllers").read_text().split())
    missing = wanted - available
    if missing:
        raise CgroupError(f"cgroup v2 controllers {sorted(missing)} not available at {path}")
    enabled = set((path / "cgroup.subtree_control").read_text().split())
    todo = " ".join(f"+{c}" for c in sorted(wanted - enabled))
    if todo:
        (path / "cgroup.subtree_control").write_text(todo)


@dataclass(frozen=True)
class Cgroup:
    version: Version
    dirs: dict[str, Path]  # controller ('' for v2) -> directory

    def create(self, limits: Limits) -> None:
        """Make the directories and write the limits (idempotent)."""
        for d in self.dirs.values():
            # parents: the daemon's base may have been removed while empty
            # (an operator's clean-up, or the test suite's at its end).
            d.mkdir(parents=True, exist_ok=True)
        for controller, name, value in limit_files(self.version, limits):
            path = self.dirs[controller] / name
            try:
                path.write_text(value)
            except FileNotFoundError:
                if name.startswith("memory.memsw") or name == "memory.swap.max":
                    continue  # no swap accounting on this kernel: memory alone bounds it
                raise CgroupError(f"cannot set {name}: the kernel lacks it") from None
            except OSError as exc:
                raise CgroupError(f"cannot set {name}={value}: {exc}") from None

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def attach_self(self) -> None:
        """For the child between fork and exec: move this process in.

        Plain os calls only (no allocation-heavy Python): it runs in a forked
        child of a threaded daemon.
        """
        pid = str(os.getpid()).encode()
        for path in self.procs_files():
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self.dirs.values():
            with contextlib.suppress(FileNotFoundError):
                out.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        return out

    def signal_all(self, sig: int, exclude: Iterable[int] = ()) -> int:
        """Send `sig` to every process inside (but `exclude`); how many got it."""
        skip = set(exclude)
        sent = 0
        for pid in self.pids() - skip:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                sent += 1
        return sent

    def kill(self) -> bool:
        """SIGKILL everything inside; True once it is empty."""
        kill_file = self.dirs.get("", Path("/nonexistent")) / "cgroup.kill"
        if self.version == 2 and kill_file.exists():
            with contextlib.suppress(FileNotFoundError):
                kill_file.write_text("1")
        for _ in range(KILL_PASSES):
            if not self.signal_all(signal.SIGKILL) and not self.pids():
                return True
            time.sleep(0.002)
        return not self.pids()

    def oom_kills(self) -> int:
        if self.version == 2:
            name, d = "memory.events", self.dirs[""]
        else:
            name, d = "memory.oom_control", self.dirs["memory"]
        try:
            return parse_oom_kills(self.version, (d / name).read_text())
        except FileNotFoundError:
            return 0

    def memory_bytes(self) -> int:
        if self.version == 2:
            path = self.dirs[""] / "memory.current"
        else:
            path = self.dirs["memory"] / "memory.usage_in_bytes"
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return 0

    def remove(self) -> bool:
        """Remove the (empty) directories; False if one is still busy."""
        ok = True
        for d in self.dirs.values():
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                ok = False
        return ok

    def destroy(self) -> bool:
        """Kill what is left and remove the cgroup; False if it stayed busy."""
        self.kill()
        return self.remove()
