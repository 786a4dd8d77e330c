"""Automatic rollback (issue 19): a release that went live and starts
crash-looping after its promotion is rolled back by itself; the
release before it serves again, and the log, the releases, the dashboard
and a platform event say why.

The crash is set off by the test, not by a clock in the app: v2's worker
exits once a file appears in the app's data directory, and the test puts
it there only after v2 has been live and serving a few seconds, so the crash
comes after promotion however slow the machine is: seconds after it
(v2 served and its worker ran meanwhile), inside the default rollback
window of five minutes, which the platform keeps."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from roost.cli.client import resolve
from tests.appdata import app_data_dir
from tests.conftest import REPO, wait_until
from tests.e2e.platform import running_platform

pytestmark = pytest.mark.e2e

OLD, NEW = "Hello from Roost!", "Hello again, Roost!"
CALM_WORKER = """import time

while True:
    time.sleep(1)
"""
# v2's worker: fine until the trigger file appears, then exits at once, and
# again each time its runner restarts it (a crash loop).
FRAGILE_WORKER = """import os
import sys
import time

from bundle_config import config

trigger = os.path.join(config["core"]["data_directory"], "crash-now")
while True:
    if os.path.exists(trigger):
        sys.exit("RuntimeError: the cache is gone")
    time.sleep(0.2)
"""
WINDOW_S = 300  # ROOST_ROLLBACK_WINDOW_S's default, which the platform keeps
# v2 serving and its worker up (both checked before the crash), past the
# rollout that promoted it (which ends at promotion); 30 s and two minutes
# once, for nothing the test checks more: nothing in the platform counts
# time from the promotion but the window (controller/aftercare.py).
CRASH_AFTER_S = 5


def test_a_release_crash_looping_after_promotion_is_rolled_back(tmp_path: Path) -> None:
    app_dir = tmp_path / "fragile"
    shutil.copytree(REPO / "examples" / "hello", app_dir)
    (app_dir / "Procfile").write_text("worker: python worker.py\n")
    (app_dir / "worker.py").write_text(CALM_WORKER)
    with running_platform() as platform:
        platform.roost("apps", "create", "fragile")
        platform.roost("deploy", str(app_dir), "--app", "fragile")
        wait_until(lambda: OLD in platform.get("fragile").text, 30, "v1 serving")

        app_py = app_dir / "app.py"
        app_py.write_text(app_py.read_text().replace(OLD, NEW))
        (app_dir / "worker.py").write_text(FRAGILE_WORKER)
        r = platform.roost("deploy", str(app_dir), "--app", "fragile")
        assert "v2 is live" in r.stdout, r.stdout
        promoted = time.monotonic()
        # v2 serves, its worker runs, for a good while after its promotion.
        wait_until(lambda: NEW in platform.get("fragile").text, 30, "v2 serving")
        time.sleep(max(0.0, promoted + CRASH_AFTER_S - time.monotonic()))
        assert NEW in platform.get("fragile").text
        workers = [i for i in platform.ps("fragile") if str(i["process"]).startswith("worker")]
        assert [(w["release"], w["state"]) for w in workers] == [(2, "up")], workers

        data = app_data_dir(platform.data, "fragile")
        (data / "crash-now").write_text("")
        assert time.monotonic() - promoted < WINDOW_S  # still inside the window

        # Rolled back by itself: v3, a copy of v1, serves v1's page again.
        wait_until(lambda: OLD in platform.get("fragile").text, 120, "v1's page again")
        releases = json.loads(platform.roost("releases", "--app", "fragile", "--json").stdout)
        by_version = {r["version"]: r for r in releases}
        assert by_version[3]["status"] == "active", releases
        assert by_version[3]["image_digest"] == by_version[1]["image_digest"]
        assert by_version[3]["description"].startswith("automatic rollback to v1")
        bad = by_version[2]
        assert bad["status"] == "rolled-back", releases
        said = bad["description"]
        assert said.startswith("v2 crash-looped after promotion: worker.1 crashed"), said
        assert "the cache is gone" in said and said.endswith("rolled back to v1"), said

        # The deploy that made v2 reads rolled back, not live.
        deploys = json.loads(platform.roost("deploys", "--app", "fragile", "--json").stdout)
        made_v2 = next(d for d in deploys if d["release"] == 2)
        assert (made_v2["status"], made_v2["outcome"]) == ("rolled-back", f"rolled back: {said}")
        # The app's log, the platform's events and the dashboard say so.
        logs = platform.roost("logs", "--app", "fragile", "-n", "500").stdout
        assert said in logs, logs[-3000:]
        api = resolve(platform.data)
        events = api.request("GET", "/api/events", params={"limit": 50})
        assert {"app": "fragile", "kind": "deploy-rolled-back", "message": f"fragile: {said}"} in [
            {k: e[k] for k in ("app", "kind", "message")} for e in events
        ], events
        board = api.request("GET", "/api/dashboard")
        shown = next(a for a in board["apps"] if a["name"] == "fragile")
        assert {"version": 2, "status": "rolled-back", "description": said} in [
            {k: d[k] for k in ("version", "status", "description")} for d in shown["deploys"]
        ]
        # v1's worker ignores the file: the app stays on v3, nothing flaps.
        wait_until(
            lambda: all(i["release"] == 3 for i in platform.ps("fragile")),
            60,
            "v2's instances to stop",
        )
        time.sleep(5)
        assert [r["version"] for r in json.loads(
            platform.roost("releases", "--app", "fragile", "--json").stdout
        )] == [3, 2, 1]  # fmt: skip
        assert OLD in platform.get("fragile").text
