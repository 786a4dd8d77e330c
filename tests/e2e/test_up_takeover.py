"""The one-host upgrade from the previous release (issue 20): this tree's
`roost up` started on the data directory of the previous release's running
`roost up` takes over from it (roost.cli.takeover, "hand-over") under
steady load through the router: each of its daemons is replaced by this
release's as a reload replaces them, the runner and the servicehost
leaving their tenants for their successors to adopt, the router draining
while this one's serves on the same sockets.

The previous release (tests/previous_release.py: its tag, or the commit
CHANGELOG.md names where a clone has no tags) is checked out in a git
worktree; its `roost up` runs from there (PYTHONPATH) with examples/hello
deployed, two web instances. Checked: 0 failed requests, on new
connections and on keep-alive ones; the older `roost up` has ended and
this one holds the directory and says every role is up, each daemon of
this release; the app's instances are the same processes; a full stop
then leaves nothing running.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roost import __version__
from roost.proc import upstate
from tests.cluster.upgrade_hosts import version_at, worktree
from tests.conftest import REPO, wait_until
from tests.e2e.load import Load
from tests.e2e.platform import running_platform
from tests.previous_release import previous_release

pytestmark = pytest.mark.e2e

APP = "takenover"


def test_this_roost_up_takes_over_from_the_previous_release_and_fails_no_request(
    tmp_path: Path,
) -> None:
    with worktree(previous_release().rev) as prev:
        assert version_at(prev / "src") != __version__
        app_dir = tmp_path / APP
        shutil.copytree(prev / "examples" / "hello", app_dir)
        tmp_path.chmod(0o755)  # the builder's unprivileged user reads the app from here
        with running_platform(env={"PYTHONPATH": str(prev / "src")}) as p:
            p.roost("apps", "create", APP)
            p.roost("deploy", str(app_dir), "--app", APP)
            wait_until(lambda: p.get(APP).status_code == 200, 60, "the app to answer")
            wait_until(lambda: len(p.ps(APP)) == 2, 60, "its two web instances")
            before = {str(i["instance_id"]): i["pid"] for i in p.ps(APP)}
            older = p.proc
            assert older is not None
            was = upstate.load(p.data)
            assert was is not None and was[0].release == previous_release().version
            old_daemons = {role: s.pid for role, s in was[0].roles.items()}

            def load(keep_alive: int, fresh: int) -> Load:
                return Load(
                    p.router_port,
                    f"{APP}.localhost",
                    keep_alive=keep_alive,
                    fresh=fresh,
                    accept=lambda body: body.startswith("Hello"),
                )

            fresh, kept = load(0, 2), load(3, 0)
            try:
                with fresh, kept:
                    time.sleep(1.0)
                    p.proc = None  # (this tree's roost up is the platform from now on)
                    p.env = {}
                    p.start()  # returns once `roost status --wait` says every role is up
                    older.wait(timeout=120)  # (ended by SIGKILL once its daemons had gone)
                    time.sleep(1.0)
            finally:
                if older.poll() is None:  # a take-over cut short: the older one stops too
                    older.send_signal(signal.SIGCONT)
                    older.terminate()
                    older.wait(timeout=120)
            f, k = fresh.result, kept.result
            print(f"take-over from {previous_release().version}: {f.total} requests on new "
                  f"connections, {len(f.failures)} failed; {k.total} on keep-alive ones, "
                  f"{len(k.failures)} failed")  # fmt: skip
            assert f.failures == [] and k.failures == [], (f.failures + k.failures)[:10]
            assert f.ok > 0 and k.ok > 0
            # The same instances, the same processes: adopted, not restarted.
            assert {str(i["instance_id"]): i["pid"] for i in p.ps(APP)} == before
            now = upstate.load(p.data)
            assert now is not None and p.proc is not None and now[0].pid == p.proc.pid
            assert now[0].release == __version__
            new_daemons = {role: s.pid for role, s in now[0].roles.items()}
            assert new_daemons.keys() == old_daemons.keys()
            assert all(new_daemons[r] != old_daemons[r] for r in old_daemons), new_daemons
            r = subprocess.run(
                [sys.executable, "-m", "roost", "--data", str(p.data), "status"],
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            assert r.returncode == 0, r.stdout + r.stderr
