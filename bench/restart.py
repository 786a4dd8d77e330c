"""Restart benchmark (issue 20): what restarting Roost's own daemons costs the visitors.

On one `roost up` (tests/e2e/platform.py's harness; root: the platform's
sandboxes), examples/hello with its two web instances, under steady HTTP
load through the router (tests/e2e/load.py: keep-alive clients and clients
opening a connection per request, GET / back to back). Each event runs in a
window of load of its own: a second of load, the event, the load until the
platform is whole again (`roost status`'s roles all up, the one restarted
with a new pid), then a little more. Each prints one line, the failed
requests of its windows (no 200 with the app's page: errors, 502/503s) of
the requests sent in them:

  runner_restart_failed    the runner daemon killed with SIGKILL (a crash);
                           `roost up` starts another, which adopts the
                           instances
  router_restart_failed    the router sent TERM; `roost up` starts another
                           on the listening sockets it holds
  platform_reload_failed   `roost up --reload`: every daemon replaced, one
                           at a time
  upgrade_failed           the previous release's platform (the release
                           CHANGELOG.md names, tests/previous_release.py,
                           checked out in a worktree) upgraded to this
                           tree's under load: its daemons run from a
                           symbolic link to its sources (PYTHONPATH), which
                           is pointed at this tree's before
                           `roost up --reload` (this tree's CLI, which sends
                           the running `roost up` SIGHUP); `--upgrade-from
                           REV` names another revision. A release whose
                           `roost up` knows no reload (0.1.0: its status
                           names no release) is taken over instead: this
                           tree's `roost up` started on the same data
                           directory (roost.cli.takeover)
  upgrade_cluster_failed   the same release's netns cluster (a controller,
                           two runners, a router: tests/cluster/
                           upgrade_hosts.ReleaseCluster) upgraded to this
                           tree by `roost cluster upgrade` under load
                           through its router: the controller, each runner
                           drained first (0.1.0's cannot hand instances
                           over), the router taken over on its port;
                           `--no-cluster` skips it

Target: 0 for each. `--quick`: one round of each and shorter windows
(default: three rounds, their failures summed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.cluster.upgrade_hosts import ReleaseCluster, serving, worktree  # noqa: E402
from tests.conftest import wait_until  # noqa: E402
from tests.e2e.load import Load, LoadResult  # noqa: E402
from tests.e2e.platform import Platform, running_platform  # noqa: E402
from tests.previous_release import previous_release  # noqa: E402

from roost.proc import upstate  # noqa: E402

APP = "restartbench"
# How long the platform may take to be whole again after an event.
BACK_S = 180.0


def say(msg: str) -> None:
    print(f"# {msg}", flush=True)


def role_pid(platform: Platform, role: str) -> int:
    loaded = upstate.load(platform.data)
    assert loaded is not None, "roost up wrote no status"
    return loaded[0].roles[role].pid


def whole_again(platform: Platform, role: str, old: int) -> None:
    """Until every role is up and `role` runs as a process other than `old`."""

    def whole() -> bool:
        loaded = upstate.load(platform.data)
        if loaded is None:
            return False
        status = loaded[0]
        return status.ready and status.roles[role].pid not in (0, old)

    wait_until(whole, BACK_S, f"the platform whole again after {role}'s restart")


def kill_runner(platform: Platform) -> None:
    old = role_pid(platform, "runner")
    os.kill(old, signal.SIGKILL)
    whole_again(platform, "runner", old)


def term_router(platform: Platform) -> None:
    old = role_pid(platform, "router")
    os.kill(old, signal.SIGTERM)
    whole_again(platform, "router", old)


def reload_platform(platform: Platform) -> None:
    platform.roost("up", "--reload")
    platform.wait_ready()


Event = Callable[[Platform], None]
EVENTS: list[tuple[str, Event]] = [
    ("runner_restart_failed", kill_runner),
    ("router_restart_failed", term_router),
    ("platform_reload_failed", reload_platform),
]


def under_load(platform: Platform, event: Event, before_s: float, after_s: float) -> LoadResult:
    load = Load(
        platform.router_port,
        f"{APP}.localhost",
        keep_alive=3,
        fresh=2,
        accept=lambda body: body.startswith("Hello"),
    )
    with load:
        time.sleep(before_s)
        event(platform)
        time.sleep(after_s)
    return load.result


def deploy_hello(platform: Platform, work: Path) -> None:
    app_dir = work / f"{APP}-{platform.api_port}"
    shutil.copytree(REPO / "examples" / "hello", app_dir)
    platform.roost("apps", "create", APP)
    platform.roost("deploy", str(app_dir), "--app", APP)
    wait_until(lambda: platform.get(APP).status_code == 200, 60, "the app to answer")
    wait_until(lambda: len(platform.ps(APP)) == 2, 60, "its two web instances")


def upgrade(rev: str, work: Path, before_s: float, after_s: float) -> str:
    """The line of `upgrade_failed` (see the module docstring)."""
    current = work / "current"

    def to_this_tree(platform: Platform) -> None:
        current.unlink()
        current.symlink_to(REPO / "src")
        loaded = upstate.load(platform.data)
        older = platform.proc
        if loaded is not None and not loaded[0].release and older is not None:
            # Its roost up knows no reload: this tree's takes over from it.
            platform.proc = None
            platform.start()
            say(f"took over: the older roost up exited {older.wait(timeout=120)}")
            return
        r = platform.roost("up", "--reload", check=False)
        say(f"roost up --reload: exit {r.returncode}: {r.stderr.strip()[-300:]}")

    with worktree(rev) as prev:
        current.symlink_to(prev / "src")
        with running_platform(env={"PYTHONPATH": str(current)}) as platform:
            deploy_hello(platform, work)
            under_load(platform, lambda _: None, 2.0, 0.0)  # warm-up
            r = under_load(platform, to_this_tree, before_s, after_s)
            say(f"upgrade from {rev}: {r.total} requests, {len(r.failures)} failed")
            for failure in r.failures[:5]:
                say(f"  failed: {failure}")
    return f"upgrade_failed {len(r.failures)} of {r.total} requests"


def upgrade_cluster(rev: str) -> str:
    """The line of `upgrade_cluster_failed` (see the module docstring)."""
    with worktree(rev) as prev:
        base = Path(tempfile.mkdtemp(prefix="roost-bench-upgrade-cluster-"))
        c = ReleaseCluster(base, prev / "src", controllers=1, runners=2, routers=1)
        with serving(c, APP, prev / "examples" / "hello"), c.load(APP) as load:
            rc, out = c.upgrade("--no-backup", "--health-timeout", "120")
        r = load.result
    say(f"cluster upgrade from {rev}: exit {rc}, {r.total} requests, {len(r.failures)} failed")
    if rc != 0:
        say(out[-2000:])
    for failure in r.failures[:5]:
        say(f"  failed: {failure}")
    return f"upgrade_cluster_failed {len(r.failures)} of {r.total} requests"


def measure(platform: Platform, rounds: int, before_s: float, after_s: float) -> list[str]:
    lines = []
    for name, event in EVENTS:
        failed = total = 0
        for n in range(1, rounds + 1):
            r = under_load(platform, event, before_s, after_s)
            failed += len(r.failures)
            total += r.total
            p99 = r.percentile(99) * 1000
            say(f"{name} round {n}: {r.total} requests, {len(r.failures)} failed, p99 {p99:.0f} ms")
            for failure in r.failures[:5]:
                say(f"  failed: {failure}")
        lines.append(f"{name} {failed} of {total} requests")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, shorter windows")
    parser.add_argument(
        "--upgrade-from",
        default="",
        help="the revision to upgrade from (default: the previous release, CHANGELOG.md's)",
    )
    parser.add_argument(
        "--no-cluster", action="store_true", help="no upgrade_cluster_failed (a netns cluster)"
    )
    args = parser.parse_args()
    rounds, before_s, after_s = (1, 1.0, 1.0) if args.quick else (3, 2.0, 3.0)
    work = Path(tempfile.mkdtemp(prefix="roost-bench-restart-"))
    work.chmod(0o755)  # the builder's unprivileged user reads the app from here
    try:
        with running_platform() as platform:
            deploy_hello(platform, work)
            under_load(platform, lambda _: None, 2.0, 0.0)  # warm-up
            lines = measure(platform, rounds, before_s, after_s)
        rev = args.upgrade_from or previous_release().rev
        lines.append(upgrade(rev, work, before_s, after_s))
        if not args.no_cluster:
            lines.append(upgrade_cluster(rev))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for line in lines:
        print(line, flush=True)


if __name__ == "__main__":
    main()
