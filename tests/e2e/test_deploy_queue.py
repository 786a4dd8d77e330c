"""Releases in order (issue 19): three deploys of one app pushed while the
first rolls out; the second waits for the first and is told so, the third
waits too and is cancelled, and the second goes live after the first.

The first deploy is held at its rollout by the test, not by a clock: its
web instance's health check (app.json) answers 503 until a file appears in
the app's data directory, and the test puts it there only once the other
two deploys are queued and the third cancelled, however slow the machine."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from roost.cli.client import resolve
from tests.appdata import app_data_dir
from tests.conftest import REPO, wait_until
from tests.e2e.platform import Platform, running_platform

pytestmark = pytest.mark.e2e

GATED = """

from bundle_config import config

READY = os.path.join(config["core"]["data_directory"], "ready")


@app.route("/ready")
def ready() -> tuple[str, int]:
    return ("ready\\n", 200) if os.path.exists(READY) else ("not yet\\n", 503)
"""
# One attempt a second for two minutes: the deploy waits at its rollout
# until the test writes the file.
APP_JSON = {"healthchecks": {"web": [{"path": "/ready", "attempts": 120, "wait": 1}]}}


def app_dir(tmp_path: Path, greeting: str) -> Path:
    d = tmp_path / greeting.lower()
    shutil.copytree(REPO / "examples" / "hello", d)
    app_py = d / "app.py"
    app_py.write_text(app_py.read_text().replace("Hello from Roost!", greeting) + GATED)
    (d / "app.json").write_text(json.dumps(APP_JSON))
    return d


def deploy(platform: Platform, d: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*platform.command(), "deploy", str(d), "--app", "inline"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_deploys_of_one_app_wait_in_order_and_a_queued_one_is_cancelled(tmp_path: Path) -> None:
    dirs = [app_dir(tmp_path, g) for g in ("First", "Second", "Third")]
    with running_platform() as platform:
        platform.roost("apps", "create", "inline")
        api = resolve(platform.data)

        def builds() -> list[dict[str, object]]:
            rows = api.request("GET", "/api/apps/inline/builds")
            return list(reversed(rows))  # oldest first

        running: list[subprocess.Popen[str]] = []
        try:
            running.append(deploy(platform, dirs[0]))
            wait_until(
                lambda: [b["status"] for b in builds()] == ["rolling-out"], 180, "v1 rolling out"
            )
            for d in dirs[1:]:
                running.append(deploy(platform, d))
                wait_until(lambda: len(builds()) == len(running), 60, "the deploy received")
            first, second, third = (str(b["build_id"]) for b in builds())
            assert [b["status"] for b in builds()] == ["rolling-out", "queued", "queued"]

            r = platform.roost("deploys", "cancel", third)
            assert r.stdout.startswith(f"deploy {third} (inline): cancelled by "), r.stdout
            out3, _ = running[2].communicate(timeout=60)
            assert running[2].returncode != 0 and "deploy cancelled by " in out3, out3

            # The runner makes the data directory as it starts the first
            # instance, which can come after the build reads rolling-out.
            wait_until(
                lambda: app_data_dir(platform.data, "inline").exists(), 120, "the data directory"
            )
            (app_data_dir(platform.data, "inline") / "ready").write_text("")
            out1, _ = running[0].communicate(timeout=300)
            out2, _ = running[1].communicate(timeout=300)
        finally:
            for proc in running:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert running[0].returncode == 0 and "-----> v1 is live" in out1, out1
        assert running[1].returncode == 0, out2
        assert f"waiting for deploy {first} to finish" in out2, out2
        assert "-----> the earlier deploy ended; building" in out2, out2
        assert "-----> v2 is live" in out2, out2
        assert "Second" in platform.get("inline").text
        ended = {str(b["build_id"]): (b["status"], b["release"]) for b in builds()}
        assert ended == {
            first: ("live", 1),
            second: ("live", 2),
            third: ("cancelled", None),
        }
