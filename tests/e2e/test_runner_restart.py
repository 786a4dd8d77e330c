"""The runner restarts; the apps keep serving (issue 20). Under steady load
through the router, the runner daemon is killed with SIGKILL (a crash), or
told to hand over with SIGUSR2 (an upgrade): `roost up` starts it again, the
new runner adopts the instances from their shims, and no request fails. The
instances are the same processes, what they log after the restart reaches
`roost logs`, and a redeploy then replaces them as it replaces any."""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, wait_until
from tests.e2e.load import Load
from tests.e2e.platform import Platform, running_platform

pytestmark = pytest.mark.e2e

OLD, NEW = "Hello from Roost!", "Hello again, Roost!"
# Added to examples/hello: a line in the app's log on request.
ROUTES = """

@app.route("/say/<word>")
def say(word: str) -> str:
    print(f"said {word}", flush=True)
    return f"{GREETING}\\n"
"""


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    with running_platform() as p:
        yield p


def instances(p: Platform, app: str) -> dict[str, tuple[object, object, object]]:
    """instance id -> (pid, port, state), web instances only."""
    return {
        str(i["instance_id"]): (i["pid"], i["port"], i["state"])
        for i in p.ps(app)
        if i["process_type"] == "web"
    }


def restart_under_load(p: Platform, tmp_path: Path, app: str, sig: signal.Signals) -> None:
    app_dir = tmp_path / app
    shutil.copytree(REPO / "examples" / "hello", app_dir)
    with (app_dir / "app.py").open("a") as f:
        f.write(ROUTES)
    p.roost("apps", "create", app)
    p.roost("deploy", str(app_dir), "--app", app)
    wait_until(
        lambda: [s for _pid, _port, s in instances(p, app).values()] == ["up", "up"],
        60,
        "two web instances up",
    )
    before = instances(p, app)
    old_runner = p.role_pid("runner")
    assert old_runner

    load = Load(p.router_port, f"{app}.localhost", accept=lambda body: body.strip() == OLD)
    with load:
        time.sleep(1.0)  # load before the restart
        began = time.monotonic()
        os.kill(old_runner, sig)
        wait_until(lambda: p.role_pid("runner") not in (0, old_runner), 60, "a new runner")
        new_runner = p.role_pid("runner")
        # It adopted both instances as they were, then took its assignment
        # (which keeps them: nothing restarts).
        said = f"runner[{new_runner}] INFO roost.runner: "
        wait_until(lambda: f"{said}accepted assignment" in p.log.read_text(), 30, "its assignment")
        took = time.monotonic() - began
        print(f"{app}: the new runner held its assignment {took:.1f} s after the {sig.name}")
        log = p.log.read_text()
        for iid, (pid, _port, _state) in before.items():
            assert f"{said}{app} {iid}: adopted (pid {pid}, up)" in log
        time.sleep(2.0)  # load after it
    result = load.result
    print(f"{app}: {result.ok} of {result.total} requests answered across the runner's {sig.name}")
    assert result.failures == [], (result.total, result.failures[:10])
    assert result.ok > 50
    assert not psutil.pid_exists(old_runner) or psutil.Process(old_runner).status() == "zombie"

    # The same processes, ports and states, as `roost ps` says.
    assert instances(p, app) == before
    for pid, _port, _state in before.values():
        assert psutil.pid_exists(int(pid))  # type: ignore[call-overload]

    # What the instances log now reaches the app's log through the new runner.
    word = uuid.uuid4().hex[:12]
    for _ in range(4):  # round robin: both instances say it
        assert p.get(app, f"/say/{word}").status_code == 200
    wait_until(
        lambda: f"said {word}" in p.roost("logs", "--app", app, "-n", "200").stdout,
        30,
        "the line logged after the restart",
    )

    # A redeploy replaces the adopted instances as it replaces any.
    app_py = app_dir / "app.py"
    app_py.write_text(app_py.read_text().replace(OLD, NEW))
    r = p.roost("deploy", str(app_dir), "--app", app)
    assert "is live" in r.stdout, r.stdout
    wait_until(lambda: OLD not in p.get(app).text, 60, "the new release to serve")
    wait_until(lambda: not set(instances(p, app)) & set(before), 60, "the adopted instances to go")
    for pid, _port, _state in before.values():
        wait_until(lambda pid=pid: not alive(int(pid)), 30, "an adopted instance's exit")  # type: ignore[misc]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_killed_runner_is_replaced_and_no_request_fails(
    platform: Platform, tmp_path: Path
) -> None:
    restart_under_load(platform, tmp_path, "crashing", signal.SIGKILL)


def test_a_runner_handing_over_fails_no_request(platform: Platform, tmp_path: Path) -> None:
    restart_under_load(platform, tmp_path, "handing", signal.SIGUSR2)
