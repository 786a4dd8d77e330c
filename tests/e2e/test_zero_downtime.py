"""Zero downtime, proven under load (issue 19): an app redeployed while clients
keep sending requests through the router, on keep-alive connections and on
fresh ones, loses none of them. The old instances leave the route table,
drain, and only then are told to stop; requests they still hold finish
within the app's graceful timeout (ROOST_GRACEFUL_TIMEOUT, here longer than
the platform's ROOST_STOP_GRACE_S) before anything is killed."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, wait_until
from tests.e2e.load import Load
from tests.e2e.platform import Platform, running_platform

pytestmark = pytest.mark.e2e

OLD, NEW = "Hello from Roost!", "Hello again, Roost!"
# Added to examples/hello: a POST that takes a while (so some are in flight
# whenever an instance is told to stop), and a POST that answers only once
# its worker was sent TERM and then 5 s more: a request in flight at the
# stop, longer than the platform's grace (2 s here), shorter than the app's.
ROUTES = """

import os
import signal
import threading
import time

from flask import request

_told_to_stop = threading.Event()
_watching = set()


# Installed in the worker, at its first request: gunicorn preloads the app
# in its arbiter by default (so this module runs there) and gives each
# worker its own TERM handler after the fork.
@app.before_request
def _watch_term() -> None:
    if os.getpid() in _watching:
        return
    _watching.add(os.getpid())
    gunicorns = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        _told_to_stop.set()
        if callable(gunicorns):
            gunicorns(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


@app.route("/work", methods=["POST"])
def work() -> str:
    request.get_data()
    time.sleep(0.3)
    return f"{GREETING}\\n"


@app.route("/until-stopped", methods=["POST"])
def until_stopped() -> str:
    request.get_data()
    deadline = time.monotonic() + 120  # (within gunicorn's --timeout, set below)
    while not _told_to_stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not _told_to_stop.is_set():
        return "never told to stop\\n", 500
    time.sleep(5)
    return f"{GREETING}\\n"
"""


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    # Held requests wait for a whole deploy: the router waits for them too.
    env = {"ROOST_STOP_GRACE_S": "2", "ROOST_ROUTER_FIRST_BYTE_TIMEOUT_S": "150"}
    with running_platform(env=env) as p:
        yield p


def test_redeploy_under_load_fails_no_request(platform: Platform, tmp_path: Path) -> None:
    app_dir = tmp_path / "hello"
    shutil.copytree(REPO / "examples" / "hello", app_dir)
    with (app_dir / "app.py").open("a") as f:
        f.write(ROUTES)
    platform.roost("apps", "create", "steady")
    platform.roost("deploy", str(app_dir), "--app", "steady")
    # v2: the same code, with more time to finish requests when told to stop
    # (and gunicorn's worker timeout past a held request's longest wait).
    platform.roost(
        "config", "set", "ROOST_GRACEFUL_TIMEOUT=20", "GUNICORN_CMD_ARGS=--timeout 150",
        "--app", "steady",
    )  # fmt: skip
    wait_until(lambda: {i["release"] for i in platform.ps("steady")} == {2}, 60, "v2 alone running")
    app_py = app_dir / "app.py"
    app_py.write_text(app_py.read_text().replace(OLD, NEW))

    def greeting(body: str) -> bool:
        return body.strip() in (OLD, NEW)

    port, host = platform.router_port, "steady.localhost"
    gets = Load(port, host, keep_alive=3, fresh=2, accept=greeting)
    # Not idempotent, so never retried once sent: each must be answered by
    # the instance that took it.
    posts = Load(
        port, host, "/work", method="POST", body=b"x" * 1000, keep_alive=1, fresh=1,
        accept=greeting,
    )  # fmt: skip
    held = Load(
        port, host, "/until-stopped", method="POST", body=b"x", keep_alive=2, fresh=0,
        each=1, timeout_s=150, accept=lambda body: body.strip() == OLD,
    )  # fmt: skip
    with gets, posts, held:
        time.sleep(1)  # load before the deploy starts
        r = platform.roost("deploy", str(app_dir), "--app", "steady")
        assert "v3 is live" in r.stdout, r.stdout
        wait_until(
            lambda: {i["release"] for i in platform.ps("steady")} == {3},
            60,
            "v2's instances to leave",
        )
        time.sleep(3)  # steady load a few seconds after
    failed = {
        name: (result.failures, result.total)
        for name, result in (("GET", gets.result), ("POST", posts.result), ("held", held.result))
        if result.failures
    }
    assert not failed, failed
    # The load ran throughout: both releases answered it.
    assert {b.strip() for b in gets.result.bodies} == {OLD, NEW}
    assert gets.result.ok > 100 and posts.result.ok > 10
    assert held.result.ok == 2  # each held request finished, after its instance was told to stop
