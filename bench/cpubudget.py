"""Hold processes to a share of a CPU with a cgroup's CPU quota, for benchmarks.

A worker held to 0.4 of a CPU stands for a core of its own on a machine with
fewer cores than the load needs: on two cores shared with the load generator
and the backend, two router workers can get no more CPU than one, so whether
throughput grows with cores shows only when each worker's CPU is held to the
same budget (two workers, two budgets). The kernel's CFS bandwidth control
does the holding: cgroup v1's `cpu.cfs_quota_us` over `cpu.cfs_period_us`,
cgroup v2's `cpu.max`. Each budget is a cgroup of its own, made under the
CPU controller's root and removed on exit (its processes moved back first).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


def _v2(root: Path) -> bool:
    return (root / "cgroup.controllers").exists()


class CpuBudget:
    """A cgroup whose processes together get at most `cpus` CPUs per period."""

    def __init__(self, name: str, cpus: float, root: Path = ROOT) -> None:
        if not 0.01 <= cpus <= 64:
            raise ValueError(f"a CPU budget is between 0.01 and 64 CPUs, not {cpus}")
        self.cpus = cpus
        self.v2 = _v2(root)
        self.top = root if self.v2 else root / "cpu"
        if not (self.top / "cgroup.procs").exists():
            raise RuntimeError(f"no CPU controller at {self.top} (cgroup v1 or v2)")
        self.path = self.top / f"roost-bench-{os.getpid()}-{name}"
        self.came_from: dict[int, Path] = {}

    def __enter__(self) -> CpuBudget:
        quota = round(self.cpus * PERIOD_US)
        if self.v2:
            # (the root's children get the cpu controller only when asked)
            with contextlib.suppress(OSError):
                (self.top / "cgroup.subtree_control").write_text("+cpu")
            self.path.mkdir()
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            self.path.mkdir()
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        return self

    def add(self, pid: int) -> None:
        """The process with all its threads (cgroup.procs moves a thread group);
        it goes back where it was on exit."""
        self.came_from[pid] = self._cgroup_of(pid)
        (self.path / "cgroup.procs").write_text(str(pid))

    def _cgroup_of(self, pid: int) -> Path:
        """The process's group in this hierarchy, from /proc/PID/cgroup
        (v2: "0::/path"; v1: "N:cpu,cpuacct:/path" or "N:cpu:/path")."""
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if (self.v2 and controllers == "") or (not self.v2 and "cpu" in controllers.split(",")):
                return self.top / path.lstrip("/")
        return self.top

    def throttled_s(self) -> float:
        """Seconds the group's processes were held back by the quota so far."""
        stat = dict(
            line.split(" ", 1) for line in (self.path / "cpu.stat").read_text().splitlines()
        )
        if self.v2:
            return int(stat.get("throttled_usec", "0")) / 1e6
        return int(stat.get("throttled_time", "0")) / 1e9

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(FileNotFoundError):
            for pid in (self.path / "cgroup.procs").read_text().split():
                back = self.came_from.get(int(pid), self.top)
                with contextlib.suppress(OSError):
                    (back / "cgroup.procs").write_text(pid)
        with contextlib.suppress(FileNotFoundError):
            self.path.rmdir()
