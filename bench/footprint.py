"""Footprint benchmark (issue 21): what the platform itself holds on one machine, idle.

One `roost up` as a user starts it (tests/e2e/platform.py's harness: a fresh
data directory, every role up by `roost status --wait`), no app deployed,
in a network namespace of its own (tests/netns.py: its tenant firewall,
on as a user's, then refuses no other platform's tenants on this machine,
nor theirs it).
Idle means doing nothing: a platform's first start runs one-off jobs
(backupd's first base backup and its checks: `barman backup`,
pg_basebackup, restic) for some 20-30 s after every role is up, so the
benchmark first waits until no process has joined or left `roost up`'s
tree for `QUIET_S` (at most `QUIET_WAIT_S`; `idle_wait_s` says how long it
waited, `idle_reached` whether it got there). Then, after a settle window
(20 s; `--quick` 5 s), every process of `roost up`'s tree is measured:
`roost up` is a subreaper (roost.cli.up), so whatever its roles start
(PostgreSQL, Redis, HAProxy, etcd, shims) stays in that tree. A process
born inside the window is printed as `footprint_born_in_window[GROUP]`
(counted in the sums all the same).

The target is judged on the union of the physical pages the tree maps,
each counted once: the roles are forked from one zygote and share its pages
copy-on-write, and a USS sum counts those shared pages nowhere, an RSS sum
once per sharer. PSS (each page split between the processes that map it)
adds up within the tree but splits a page it shares with processes outside
it too (the interpreter, libc, libssl of every other Python on the box), so
its sum falls as the machine gets busier: one build measured 205.3 MB at
load 17-22 and 238.9 on a quiet machine. The union is what the platform
holds with nothing else running. Printed, one `name value` line each:

  footprint_rss_mb            resident memory of all of them (RSS double
                              counts pages they share: libraries, forked
                              copy-on-write heaps)
  footprint_pss_mb            their PSS sum: what they hold together
  footprint_uss_mb            their unique set size (psutil's
                              memory_full_info): what stopping them frees,
                              less the pages they share among themselves
  footprint_union_mb          the physical pages mapped by any of them,
                              each counted once (/proc/PID/pagemap's frame
                              numbers, root only): all of them together,
                              whatever else runs on the machine
  idle_daemons_mb             the issue's figure: the union (the PSS sum
                              before it; the USS sum before that)
  footprint_pss_mb[GROUP]     per group (a role's daemon by role name, the
  footprint_uss_mb[GROUP]     others by program), largest PSS first, with
  footprint_rss_mb[GROUP]
  footprint_processes[GROUP]  how many processes the group has
  footprint_vs_target         PSS over the 200 MB target
  idle_cpu_share              CPU seconds the tree used during the settle
                              window over the window's seconds (1.0 = one
                              core busy)
  idle_cpu_share[GROUP]       the same per group, largest first
  footprint_processes         how many processes were measured
  idle_wait_s, idle_reached   the wait for idle (above)
  footprint_born_in_window[GROUP]  PSS of processes born in the window

`--idle-only` stops there.

Then the per-app part, on the same platform: N small apps (`--apps`, 100;
`--quick` 10), each examples/hello (Flask, one route) in its default
formation (two web instances), deployed through the platform as a user does
(`roost apps create`, `roost deploy`; `--parallel` deploys at a time;
`--config KEY=VALUE` sets a config var on each first), then
every app asked for its page through the router. After a settle window the
tree is measured again. A process counts as the app's own when it runs as
the app's Unix user (`a<id>-<app>`: gunicorn's master and workers, in its
sandbox); everything else is the platform's (shims, bubblewrap's processes,
the daemons, per-app servers). Processes born during either settle window
(backup and build jobs that come and go) are left out of both sides of the
comparison and printed as `transient_mb`. Memory is PSS here (each shared
page split between the processes mapping it: additive, so sums are what the
machine holds; USS would drop the pages an app's preloaded master shares
with its workers, and those of the interpreter all shims share), with USS
printed beside it:

  deploy_s                    seconds to deploy all N apps, and per app
  deploy_s_per_app            (the median `roost deploy`'s own time)
  apps_serving                N/N: apps whose page came through the router
  hello_app_mb                one app's own processes (PSS, median app)
  hello_app_uss_mb            the same as a USS sum
  hello_app_processes         how many processes one app has
  per_app_mb                  growth of the platform's PSS over the idle
                              platform's, over N (target <= 10)
  per_app_uss_mb              the same with USS
  per_app_mb[GROUP]           that growth per group, largest first
  transient_mb                PSS of the jobs left out
  stop_s                      seconds `roost up` took to stop with the apps
                              running (SIGTERM to exit)
  instance_memory_mb          what each instance reserved (below)
  apps_placeable              apps of two instances the host's memory fits
                              at that reservation, and at the default
  apps_placeable_by_default   (ROOST_INSTANCE_MEMORY_MB, 256)

The scheduler places an instance only where its reservation fits the
host's memory (`roost ps` sizes; the cgroup's limit too), not where its use
does: at the default 256 MB a 24 GB host takes 47 such apps, and the 48th
deploy fails (no host has room). So the platform runs here with
ROOST_INSTANCE_MEMORY_MB=96 (`--instance-memory-mb`), still above what a
small app's instance uses.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import processes_under, wait_until  # noqa: E402
from tests.e2e.platform import Platform, running_platform  # noqa: E402
from tests.netns import own_network_namespace  # noqa: E402

from roost.proc import upstate  # noqa: E402
from roost.settings import Settings  # noqa: E402
from roost.tenant.identity import APP_UID_BASE, MAX_APP_ID  # noqa: E402

TARGET_MB = 200.0
# Idle: no process joined or left roost up's tree for this long (the first
# start's one-off jobs have ended), waited for at most QUIET_WAIT_S.
QUIET_S = 8.0
QUIET_WAIT_S = 120.0
PER_APP_TARGET_MB = 10.0
HELLO_TARGET_MB = 80.0
# What each instance reserves when placed (and its cgroup's limit) in this
# benchmark: the default, 256 MB, fits 94 instances (47 apps) on a 24 GB
# host, since the scheduler places by reservation, not by use.
INSTANCE_MEMORY_MB = 96
MB = 1024.0 * 1024.0
GREETING = "Hello from Roost!"


@dataclass(frozen=True)
class Sample:
    pid: int
    group: str
    rss: int
    uss: int
    cpu_s: float
    pss: int = 0
    uid: int = 0
    created: float = 0.0


def role_pids(platform: Platform) -> dict[int, str]:
    """Each role's pid -> its name; a process that runs several roles
    (ROOST_ROLE_HOST=on) is grouped as `roles`."""
    loaded = upstate.load(platform.data)
    assert loaded is not None, "roost up wrote no status"
    out: dict[int, str] = {}
    for name, s in loaded[0].roles.items():
        if s.pid:
            out[s.pid] = "roles" if s.pid in out else name
    return out


def group_of(proc: psutil.Process, up_pid: int, roles: dict[int, str]) -> str:
    """A role's daemon by its role; `roost up` as `up`; a shim (or the
    shims' fork server, whose command line a forked shim keeps) as `shim`; a
    Python process by the module it runs (`-m roost.x.y`); anything else by
    its program name (bwrap's command line also holds `-m gunicorn`)."""
    if proc.pid == up_pid:
        return "up"
    if proc.pid in roles:
        return roles[proc.pid]
    cmd = proc.cmdline()
    if any(arg.endswith(("/shim.py", "/shimfork.py")) for arg in cmd[:4]):
        return "shim"
    if "-m" in cmd[:-1] and Path(cmd[0]).name.startswith("python"):
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
                    mem.pss,
                    proc.uids().real,
                    proc.create_time(),
                )
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return out


PAGE = 4096
_PRESENT = 1 << 63
_PFN = (1 << 55) - 1


def frames(pid: int) -> set[int]:
    """The physical frames of `pid`'s resident pages (its pagemap: bit 63
    present, bits 0-54 the frame number, which only root reads as non-zero).
    Swapped pages are not resident and not counted."""
    out: set[int] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
            if lo >= 1 << 47:  # [vsyscall]: no pagemap entries
                continue
            pagemap.seek(lo // PAGE * 8)
            entries = array.array("Q", pagemap.read((hi - lo) // PAGE * 8))
            out.update(e & _PFN for e in entries if e & _PRESENT)
    out.discard(0)
    return out


def union_bytes(pids: Sequence[int]) -> int:
    """The tree's resident memory, each physical page once."""
    seen: set[int] = set()
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            seen |= frames(pid)
    return len(seen) * PAGE


def quiet_since(seen: list[tuple[float, frozenset[int]]], now: float, quiet_s: float) -> bool:
    """Whether the tree's pids, sampled at the times in `seen` (oldest
    first), stayed the same for the last `quiet_s` seconds up to `now`."""
    if not seen or now - seen[0][0] < quiet_s:
        return False
    last = seen[-1][1]
    for at, pids in reversed(seen):
        if pids != last:
            return False
        if now - at >= quiet_s:
            return True
    return False


def wait_idle(platform: Platform, quiet_s: float, limit_s: float) -> tuple[float, bool]:
    """Wait until no process joined or left the tree for `quiet_s`; the
    seconds waited and whether it got there within `limit_s`."""
    start = time.monotonic()
    seen: list[tuple[float, frozenset[int]]] = []
    while True:
        now = time.monotonic()
        seen.append((now, frozenset(p.pid for p in tree(platform))))
        if quiet_since(seen, now, quiet_s):
            return now - start, True
        if now - start >= limit_s:
            return now - start, False
        time.sleep(0.5)


def figures(
    before: dict[int, Sample], after: dict[int, Sample], window_s: float, union: int
) -> list[str]:
    """The printed lines from two samples a settle window apart (`union`:
    `union_bytes` of the second). A process born inside the window counts
    all its CPU time (it began at 0)."""
    rss = sum(s.rss for s in after.values())
    pss = sum(s.pss for s in after.values())
    uss = sum(s.uss for s in after.values())
    cpu_of = {
        p: max(s.cpu_s - (before[p].cpu_s if p in before else 0.0), 0.0) for p, s in after.items()
    }
    groups_cpu: dict[str, float] = defaultdict(float)
    groups_rss: dict[str, int] = defaultdict(int)
    groups_pss: dict[str, int] = defaultdict(int)
    groups_uss: dict[str, int] = defaultdict(int)
    born: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for s in after.values():
        groups_rss[s.group] += s.rss
        groups_pss[s.group] += s.pss
        groups_uss[s.group] += s.uss
        counts[s.group] += 1
        groups_cpu[s.group] += cpu_of[s.pid]
        if s.pid not in before:
            born[s.group] += s.pss
    lines = [
        f"footprint_rss_mb {rss / MB:.1f}",
        f"footprint_pss_mb {pss / MB:.1f}",
        f"footprint_uss_mb {uss / MB:.1f}",
        f"footprint_union_mb {union / MB:.1f}",
        f"idle_daemons_mb {union / MB:.1f}",
    ]
    for g in sorted(groups_pss, key=lambda g: -groups_pss[g]):
        lines.append(f"footprint_pss_mb[{g}] {groups_pss[g] / MB:.1f}")
        lines.append(f"footprint_uss_mb[{g}] {groups_uss[g] / MB:.1f}")
        lines.append(f"footprint_rss_mb[{g}] {groups_rss[g] / MB:.1f}")
        lines.append(f"footprint_processes[{g}] {counts[g]}")
    for g in sorted(born, key=lambda g: -born[g]):
        lines.append(f"footprint_born_in_window[{g}] {born[g] / MB:.1f}")
    lines += [
        f"footprint_vs_target {union / MB / TARGET_MB:.2f}",
        f"idle_cpu_share {sum(cpu_of.values()) / window_s:.4f}",
    ]
    for g in sorted(groups_cpu, key=lambda g: -groups_cpu[g]):
        lines.append(f"idle_cpu_share[{g}] {groups_cpu[g] / window_s:.4f}")
    lines.append(f"footprint_processes {len(after)}")
    return lines


def app_of(uid: int) -> int | None:
    """The app id whose runtime user this uid is (roost.tenant.identity: the
    uid is what the platform keeps; a reused name may differ)."""
    app_id = uid - APP_UID_BASE
    return app_id if 0 < app_id <= MAX_APP_ID else None


def deploy_app(
    platform: Platform, source: Path, work: Path, name: str, config: Sequence[str] = ()
) -> float:
    """Create `name` (with config vars `config`, KEY=VALUE, set before its
    first release) and deploy a copy of `source` to it; the seconds it took."""
    app_dir = work / name
    shutil.copytree(source, app_dir)
    start = time.monotonic()
    platform.roost("apps", "create", name)
    if config:
        platform.roost("config", "set", *config, "--app", name)
    platform.roost("deploy", str(app_dir), "--app", name)
    return time.monotonic() - start


def serves(platform: Platform, name: str) -> bool:
    try:
        r = platform.get(name)
    except Exception:
        return False
    return r.status_code == 200 and GREETING in r.text


def stable(s: dict[int, Sample], since: float) -> dict[int, Sample]:
    """Those alive before `since` (time.time()): jobs born in a settle
    window come and go and are no one app's cost."""
    return {p: x for p, x in s.items() if x.created < since}


def app_figures(
    idle: dict[int, Sample],
    loaded: dict[int, Sample],
    transient: dict[int, Sample],
    apps: list[str],
    serving: int,
    deploy_times: list[float],
    deploy_s: float,
) -> list[str]:
    own: dict[int, list[Sample]] = defaultdict(list)
    platform: list[Sample] = []
    for x in loaded.values():
        app = app_of(x.uid)
        (own[app] if app is not None else platform).append(x)
    n = len(apps)
    assert len(own) == n, f"{len(own)} apps have processes, not {n}"
    per_app_pss = [sum(x.pss for x in xs) for xs in own.values()]
    per_app_uss = [sum(x.uss for x in xs) for xs in own.values()]
    growth: dict[str, int] = defaultdict(int)
    for x in platform:
        growth[x.group] += x.pss
    for x in idle.values():
        growth[x.group] -= x.pss
    pss_growth = sum(x.pss for x in platform) - sum(x.pss for x in idle.values())
    uss_growth = sum(x.uss for x in platform) - sum(x.uss for x in idle.values())
    lines = [
        f"deploy_s {deploy_s:.1f}",
        f"deploy_s_per_app {statistics.median(deploy_times):.1f}",
        f"apps_serving {serving}/{n}",
        f"hello_app_mb {statistics.median(per_app_pss) / MB:.1f}",
        f"hello_app_uss_mb {statistics.median(per_app_uss) / MB:.1f}",
        f"hello_app_processes {statistics.median_low(len(xs) for xs in own.values())}",
        f"hello_app_vs_target {statistics.median(per_app_pss) / MB / HELLO_TARGET_MB:.2f}",
        f"per_app_mb {pss_growth / n / MB:.2f}",
        f"per_app_uss_mb {uss_growth / n / MB:.2f}",
        f"per_app_vs_target {pss_growth / n / MB / PER_APP_TARGET_MB:.2f}",
    ]
    for g in sorted(growth, key=lambda g: -growth[g]):
        lines.append(f"per_app_mb[{g}] {growth[g] / n / MB:.2f}")
    lines.append(f"transient_mb {sum(x.pss for x in transient.values()) / MB:.1f}")
    return lines


def measure_apps(
    platform: Platform, n: int, parallel: int, settle_s: float, config: Sequence[str] = ()
) -> list[str]:
    """Deploy n apps, check each serves, settle, measure (see the module doc)."""
    idle_since = time.time()
    time.sleep(settle_s)
    idle = stable(sample(platform), idle_since)
    apps = [f"fp{i:03d}" for i in range(1, n + 1)]
    work = Path(tempfile.mkdtemp(prefix="roost-footprint-"))
    try:
        start = time.monotonic()
        with ThreadPoolExecutor(parallel) as pool:
            times = list(
                pool.map(
                    lambda a: deploy_app(platform, REPO / "examples" / "hello", work, a, config),
                    apps,
                )
            )
        deploy_s = time.monotonic() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with ThreadPoolExecutor(8) as pool:
        wait_until(
            lambda: all(pool.map(lambda a: serves(platform, a), apps)), 120, "every app serves"
        )
    since = time.time()
    time.sleep(settle_s)
    after = sample(platform)
    loaded = stable(after, since)
    transient = {p: x for p, x in after.items() if p not in loaded}
    with ThreadPoolExecutor(8) as pool:
        serving = sum(pool.map(lambda a: serves(platform, a), apps))
    return app_figures(idle, loaded, transient, apps, serving, times, deploy_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument(
        "--quick", action="store_true", help="5 s settle windows and 10 apps, not 20 s and 100"
    )
    ap.add_argument("--apps", type=int, default=0, help="how many apps (0: 100, --quick 10)")
    ap.add_argument("--idle-only", action="store_true", help="the idle figures only, no apps")
    ap.add_argument("--parallel", type=int, default=4, help="deploys at a time")
    ap.add_argument(
        "--instance-memory-mb",
        type=int,
        default=INSTANCE_MEMORY_MB,
        help="ROOST_INSTANCE_MEMORY_MB for the platform (see the module doc)",
    )
    ap.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config var every app gets before its first deploy, e.g. ROOST_WEB_THREADS=4",
    )
    args = ap.parse_args()
    settle_s = 5.0 if args.quick else 20.0
    n = args.apps or (10 if args.quick else 100)
    if min(n, args.parallel, args.instance_memory_mb) < 1:
        ap.error("--apps, --parallel and --instance-memory-mb must be at least 1")

    # In a network namespace of its own (tests/netns.py): the platform's
    # firewall is on, as a user's is, and the machine's table, loopback
    # ports and tenants' uids are then this run's alone, not those of test
    # platforms running beside it. What is measured is the same processes.
    with own_network_namespace(f"roost-fp-{os.getpid()}") as outside:
        env = {"ROOST_INSTANCE_MEMORY_MB": str(args.instance_memory_mb), **outside.env}
        with running_platform(env=env) as platform:
            waited_s, idle = wait_idle(platform, QUIET_S, QUIET_WAIT_S)
            print(f"idle_wait_s {waited_s:.1f}", flush=True)
            print(f"idle_reached {'yes' if idle else 'no'}", flush=True)
            before = sample(platform)
            start = time.monotonic()
            time.sleep(settle_s)
            after = sample(platform)
            window_s = time.monotonic() - start
            lines = figures(before, after, window_s, union_bytes(list(after)))
            for line in lines:
                print(line, flush=True)
            if args.idle_only:
                return
            app_lines = measure_apps(platform, n, args.parallel, settle_s, args.config)
            measured = set(after) | set(sample(platform))
            stopping = time.monotonic()
        # `roost up`'s stop with the N apps running, its roles' grace 20 s each
        # (a runner stopping 30+ apps once outran it: Per-app overhead, docs).
        stop_s = time.monotonic() - stopping
    left = [p for p in measured if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert not left, f"processes left running after the stop: {left}"
    host_mb = psutil.virtual_memory().total // int(MB)
    app_lines += [
        f"stop_s {stop_s:.1f}",
        f"instance_memory_mb {args.instance_memory_mb}",
        f"apps_placeable {host_mb // (2 * args.instance_memory_mb)}",
        f"apps_placeable_by_default {host_mb // (2 * Settings().instance_memory_mb)}",
    ]
    for line in app_lines:
        print(line)


if __name__ == "__main__":
    main()
