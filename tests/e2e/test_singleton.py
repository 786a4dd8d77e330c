"""Worker processes across a redeploy (issue 19), on a real platform: a
worker of the new release starts before the old one stops; a clock marked
a singleton in app.json stops before its new instance starts, so it never
runs twice.

Each process writes `start` when it begins and `stop` when it gets TERM to
one file in the app's data directory (appends: the file's order is the
order things happened on this one host)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.appdata import app_data_dir
from tests.conftest import REPO, wait_until
from tests.e2e.platform import running_platform

pytestmark = pytest.mark.e2e

PROC = """import os
import signal
import sys
import time

from bundle_config import config

KIND = sys.argv[1]
EVENTS = os.path.join(config["core"]["data_directory"], "events")


def say(what: str) -> None:
    with open(EVENTS, "a") as f:
        f.write(f"{what} {KIND} v{os.environ['ROOST_RELEASE']}\\n")


def stop(signum: int, frame: object) -> None:
    say("stop")
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
say("start")
while True:
    time.sleep(0.2)
"""


def test_workers_start_before_old_ones_stop_and_a_singleton_after(tmp_path: Path) -> None:
    app_dir = tmp_path / "clocked"
    shutil.copytree(REPO / "examples" / "hello", app_dir)
    (app_dir / "Procfile").write_text(
        "worker: python proc.py worker\nclock: python proc.py clock\n"
    )
    (app_dir / "proc.py").write_text(PROC)
    app_json = {"formation": {"clock": {"quantity": 1, "singleton": True}}}
    (app_dir / "app.json").write_text(json.dumps(app_json))
    with running_platform() as platform:
        platform.roost("apps", "create", "clocked")
        platform.roost("deploy", str(app_dir), "--app", "clocked")
        events = app_data_dir(platform.data, "clocked") / "events"

        def said() -> list[str]:
            return events.read_text().splitlines() if events.exists() else []

        wait_until(
            lambda: {"start worker v1", "start clock v1"} <= set(said()), 60, "v1's processes"
        )
        (app_dir / "proc.py").write_text(PROC + "# v2\n")
        r = platform.roost("deploy", str(app_dir), "--app", "clocked")
        assert "v2 is live" in r.stdout, r.stdout
        both = {"stop worker v1", "start worker v2", "stop clock v1", "start clock v2"}
        wait_until(lambda: both <= set(said()), 60, "v1's processes replaced")
        lines = said()
        assert lines.index("start worker v2") < lines.index("stop worker v1"), lines
        assert lines.index("stop clock v1") < lines.index("start clock v2"), lines
        assert lines.count("start clock v2") == 1 and lines.count("start clock v1") == 1, lines
        clocks = [i for i in platform.ps("clocked") if str(i["process"]).startswith("clock")]
        assert [(c["release"], c["state"]) for c in clocks] == [(2, "up")], clocks
