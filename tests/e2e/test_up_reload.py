"""A restart of the platform is not a stop (issue 20): `roost up --reload`
under steady load through the router replaces every Roost daemon, one at a
time, and fails no request; the apps' instances are the same processes
before and after. Then `roost down` stops it all: nothing is left running."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from roost.proc import upstate
from tests.conftest import REPO, processes_under, wait_until
from tests.e2e.load import Load
from tests.e2e.platform import running_platform

pytestmark = pytest.mark.e2e

APP = "reloaded"


def test_a_reload_under_load_replaces_the_daemons_and_fails_no_request(tmp_path: Path) -> None:
    app_dir = tmp_path / APP
    shutil.copytree(REPO / "examples" / "hello", app_dir)
    with running_platform() as p:
        p.roost("apps", "create", APP)
        p.roost("deploy", str(app_dir), "--app", APP)
        wait_until(lambda: p.get(APP).status_code == 200, 60, "the app to answer")
        wait_until(lambda: len(p.ps(APP)) == 2, 60, "its two web instances")
        instances = {i["instance_id"]: i["pid"] for i in p.ps(APP)}
        loaded = upstate.load(p.data)
        assert loaded is not None
        daemons = {name: role.pid for name, role in loaded[0].roles.items()}

        load = Load(p.router_port, f"{APP}.localhost", accept=lambda b: b.startswith("Hello"))
        with load:
            time.sleep(1.0)
            r = p.roost("up", "--reload")
            time.sleep(1.0)
        result = load.result
        assert result.failures == [], (result.total, result.failures[:10], r.stdout)
        assert result.ok > 0

        # Every daemon is a new process, which `roost up --reload` reported.
        loaded = upstate.load(p.data)
        assert loaded is not None
        status = loaded[0]
        assert status.ready and status.reload is not None and status.reload.error == ""
        after = {name: role.pid for name, role in status.roles.items()}
        assert status.reload.replaced == {name: [daemons[name], after[name]] for name in daemons}
        assert all(after[name] not in (0, daemons[name]) for name in daemons)
        for name in daemons:
            assert f"{name}: pid {daemons[name]} -> {after[name]}" in r.stdout
        # The apps were not touched: the same instances, the same processes.
        assert {i["instance_id"]: i["pid"] for i in p.ps(APP)} == instances

        # A full stop from another shell: everything ends.
        assert p.proc is not None
        p.roost("down")
        assert p.proc.wait(timeout=10) == 0
        assert processes_under(p.data) == []
        r = p.roost("down", check=False)
        assert r.returncode != 0 and "no roost up is running" in r.stderr
