"""Footprint benchmark (issue 21): what the platform itself holds on one machine, idle.

One `roost up` as a user starts it (tests/e2e/platform.py's harness: a fresh
data directory, every role up by `roost status --wait`), no app deployed.
After a settle window (20 s; `--quick` 5 s) every process of `roost up`'s
tree is measured: `roost up` is a subreaper (roost.cli.up), so whatever its
roles start (PostgreSQL, Redis, HAProxy, etcd, shims) stays in that tree.
Printed, one `name value` line each:

  footprint_rss_mb            resident memory of all of them (RSS double
                              counts pages they share: libraries, forked
                              copy-on-write heaps)
  footprint_uss_mb            their unique set size (psutil's
                              memory_full_info): what stopping them frees
  idle_daemons_mb             the issue's name for the same USS sum
  footprint_rss_mb[GROUP]     per group (a role's daemon by role name, the
  footprint_uss_mb[GROUP]     others by program), largest USS first, with
  footprint_processes[GROUP]  how many processes the group has
  footprint_vs_target         USS over the 200 MB target
  idle_cpu_share              CPU seconds the tree used during the settle
                              window over the window's seconds (1.0 = one
                              core busy)
  idle_cpu_share[GROUP]       the same per group, largest first
  footprint_processes         how many processes were measured

The platform is stopped after; the harness asserts nothing of it is left
running, and this checks every measured pid is gone too.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import processes_under  # noqa: E402
from tests.e2e.platform import Platform, running_platform  # noqa: E402

from roost.proc import upstate  # noqa: E402

TARGET_MB = 200.0
MB = 1024.0 * 1024.0


@dataclass(frozen=True)
class Sample:
    pid: int
    group: str
    rss: int
    uss: int
    cpu_s: float


def role_pids(platform: Platform) -> dict[int, str]:
    loaded = upstate.load(platform.data)
    assert loaded is not None, "roost up wrote no status"
    return {s.pid: name for name, s in loaded[0].roles.items() if s.pid}


def group_of(proc: psutil.Process, up_pid: int, roles: dict[int, str]) -> str:
    """A role's daemon by its role; `roost up` as `up`; a Python process by
    the module it runs (`-m roost.x.y`); anything else by its program name."""
    if proc.pid == up_pid:
        return "up"
    if proc.pid in roles:
        return roles[proc.pid]
    cmd = proc.cmdline()
    if "-m" in cmd[:-1]:
        return cmd[cmd.index("-m") + 1]
    return proc.name()


def tree(platform: Platform) -> list[psutil.Process]:
    """`roost up` and every descendant, plus anything naming its data
    directory (a daemon that double-forked away from the tree)."""
    assert platform.proc is not None
    root = psutil.Process(platform.proc.pid)
    procs = {p.pid: p for p in [root, *root.children(recursive=True)]}
    for p in processes_under(platform.data):
        procs.setdefault(p.pid, p)
    return list(procs.values())


def cpu_seconds(proc: psutil.Process) -> float:
    """Its own CPU time and that of the children it reaped: a short-lived
    helper that ran and exited inside the window still counts."""
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def sample(platform: Platform) -> dict[int, Sample]:
    assert platform.proc is not None
    roles = role_pids(platform)
    out: dict[int, Sample] = {}
    for proc in tree(platform):
        try:
            with proc.oneshot():
                mem = proc.memory_full_info()
                out[proc.pid] = Sample(
                    proc.pid,
                    group_of(proc, platform.proc.pid, roles),
                    mem.rss,
                    mem.uss,
                    cpu_seconds(proc),
                )
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return out


def figures(before: dict[int, Sample], after: dict[int, Sample], window_s: float) -> list[str]:
    """The printed lines from two samples a settle window apart. A process
    born inside the window counts all its CPU time (it began at 0)."""
    rss = sum(s.rss for s in after.values())
    uss = sum(s.uss for s in after.values())
    cpu_of = {
        p: max(s.cpu_s - (before[p].cpu_s if p in before else 0.0), 0.0) for p, s in after.items()
    }
    groups_cpu: dict[str, float] = defaultdict(float)
    groups_rss: dict[str, int] = defaultdict(int)
    groups_uss: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for s in after.values():
        groups_rss[s.group] += s.rss
        groups_uss[s.group] += s.uss
        counts[s.group] += 1
        groups_cpu[s.group] += cpu_of[s.pid]
    lines = [
        f"footprint_rss_mb {rss / MB:.1f}",
        f"footprint_uss_mb {uss / MB:.1f}",
        f"idle_daemons_mb {uss / MB:.1f}",
    ]
    for g in sorted(groups_uss, key=lambda g: -groups_uss[g]):
        lines.append(f"footprint_rss_mb[{g}] {groups_rss[g] / MB:.1f}")
        lines.append(f"footprint_uss_mb[{g}] {groups_uss[g] / MB:.1f}")
        lines.append(f"footprint_processes[{g}] {counts[g]}")
    lines += [
        f"footprint_vs_target {uss / MB / TARGET_MB:.2f}",
        f"idle_cpu_share {sum(cpu_of.values()) / window_s:.4f}",
    ]
    for g in sorted(groups_cpu, key=lambda g: -groups_cpu[g]):
        lines.append(f"idle_cpu_share[{g}] {groups_cpu[g] / window_s:.4f}")
    lines.append(f"footprint_processes {len(after)}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="5 s settle window instead of 20 s")
    args = ap.parse_args()
    settle_s = 5.0 if args.quick else 20.0

    with running_platform() as platform:
        before = sample(platform)
        start = time.monotonic()
        time.sleep(settle_s)
        after = sample(platform)
        window_s = time.monotonic() - start
        lines = figures(before, after, window_s)
    left = [p for p in after if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert not left, f"processes left running after the stop: {left}"
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
