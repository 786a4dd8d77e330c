"""A restore whose controller dies leaves no app in maintenance (issue 16).

Through a real `roost up`: backupd asks a controller to suspend the app
right before it replaces the app's database, and the controller that asked
for the restore resumes it after. Here that controller is killed while the
restore holds the app suspended: the restore is held, for real, by a lock
the test takes on the app's table (the safety backup's dump waits for it).
`roost up` restarts the controller, the restore finishes without anyone to
answer, and the new controller, holding the lease, resumes the app: it
serves its restored rows through the router. An app its user suspended
stays suspended all along.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import wait_until
from tests.e2e.platform import Platform, running_platform
from tests.helloapp import hello_app

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    with running_platform({"ROOST_BACKUP_SCHEDULE": "off"}) as p:
        yield p


def _info(platform: Platform, app: str) -> dict[str, Any]:
    return json.loads(platform.roost("apps", "info", app, "--json").stdout)  # type: ignore[no-any-return]


def _events(platform: Platform) -> list[str]:
    r = httpx.get(
        f"http://127.0.0.1:{platform.api_port}/api/events",
        params={"limit": 200},
        headers={"Authorization": f"Bearer {platform.token}"},
        timeout=10,
    )
    r.raise_for_status()
    return [f"{e['kind']}: {e['message']}" for e in r.json()]


def test_an_app_suspended_by_a_restore_whose_controller_died_serves_again(
    platform: Platform, tmp_path: Path
) -> None:
    src = tmp_path / "shop"
    hello_app(src, "postgres")
    platform.roost("apps", "create", "shop")
    platform.roost("deploy", str(src), "--app", "shop")
    # An app its user suspended on purpose (`roost suspend`): no pass resumes it.
    platform.roost("apps", "create", "idle")
    platform.roost("suspend", "--app", "idle")

    info = json.loads(
        platform.roost("services", "info", "postgres", "--json", "--app", "shop").stdout
    )
    url = info["url"]
    with psycopg.connect(url, connect_timeout=10) as conn:
        conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes (body) VALUES ('kept')")
    out = platform.roost("backups", "capture", "shop", "--kind", "pgdump", "--json").stdout
    (dump,) = json.loads(out)["entries"]
    with psycopg.connect(url, connect_timeout=10) as conn:
        conn.execute("INSERT INTO notes (body) VALUES ('after the backup')")
    assert platform.get("shop").status_code == 200

    # The restore loads and checks its copy while the app serves, then asks
    # for the suspension and takes the safety backup, whose dump waits here.
    lock = psycopg.connect(url, connect_timeout=10)
    lock.execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
    restore = subprocess.Popen(
        [*platform.command(), "backups", "restore", "shop", "--id", dump["id"], "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in ("ROOST_API", "ROOST_TOKEN")},
    )
    try:
        wait_until(lambda: _info(platform, "shop")["suspended"], 120, "the restore's suspension")
        wait_until(lambda: platform.get("shop").status_code == 503, 30, "the maintenance page")
        controller = platform.role_pid("controller")
        assert controller
        os.kill(controller, signal.SIGKILL)  # the controller that asked for the restore
        restore.wait(timeout=60)  # its request cut short: no one will answer it
        wait_until(
            lambda: platform.role_pid("controller") not in (0, controller),
            60,
            "roost up restarting the controller",
        )
        # The restore is still held: the new controller keeps the app suspended.
        assert _info(platform, "shop")["suspended"]
    finally:
        lock.close()  # the safety backup goes on, then the swap
        if restore.poll() is None:
            restore.kill()
            restore.wait()
    assert restore.returncode != 0, restore.stdout.read() if restore.stdout else ""

    wait_until(lambda: platform.get("shop").status_code == 200, 120, "shop serving again")
    with psycopg.connect(url, connect_timeout=10) as conn:
        rows = [r[0] for r in conn.execute("SELECT body FROM notes ORDER BY id")]
    assert rows == ["kept"]  # the restore went through
    assert not _info(platform, "shop")["suspended"]
    assert any(
        e.startswith("resume: shop resumed after its restore") and e.endswith("it is over")
        for e in _events(platform)
    ), _events(platform)
    assert _info(platform, "idle")["suspended"]
