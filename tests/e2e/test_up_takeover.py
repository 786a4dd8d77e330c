"""The one-host upgrade from the previous release (issue 20): this tree's
`roost up` started on the data directory of the previous release's running
`roost up`, which knows no reload, takes over from it (roost.cli.takeover)
under steady load through the router.

The previous release (tests/previous_release.py: its tag, or the commit
CHANGELOG.md names where a clone has no tags) is checked out in a git
worktree; its `roost up` runs from there (PYTHONPATH) with examples/hello
deployed, two web instances. Checked: 0 failed requests on new
connections, and on keep-alive ones at most the one per client that the
previous release's router cuts as it stops; the older `roost up` has ended
and this one holds the directory and says every role is up; the app's
instances are new ones, on the new runner; a full stop then leaves nothing
running.
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
from tests.cluster.upgrade_hosts import check_old_router_cut, version_at, worktree
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
            before = {str(i["instance_id"]) for i in p.ps(APP)}
            old_hosts = {str(i["host_id"]) for i in p.ps(APP)}
            older = p.proc
            assert older is not None

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
            check_old_router_cut("take-over", fresh, kept)
            after = p.ps(APP)
            assert {str(i["instance_id"]) for i in after} & before == set()
            assert {str(i["host_id"]) for i in after} & old_hosts == set()
            r = subprocess.run(
                [sys.executable, "-m", "roost", "--data", str(p.data), "status"],
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            assert r.returncode == 0, r.stdout + r.stderr
