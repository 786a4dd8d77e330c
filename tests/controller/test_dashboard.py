"""The dashboard in a real headless Chromium: it logs in with a token, renders
hosts and apps, and its screenshot is a real page (not blank)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from roost.controller.pgwatch import health_of, judge
from roost.controller.scheduler import Placement
from roost.controller.secretbox import SecretBox
from roost.controller.services import ServiceBroker
from roost.controller.store_pairs import PairRow
from roost.wire.messages import (
    Heartbeat,
    InstanceStatus,
    KeptCopy,
    ServerStatus,
    ServiceHostStatus,
)
from tests.dashboard.browser import CHROMIUM, HEADLESS
from tests.dashboard.serving import board_with_app, serving

FLAGS = [*HEADLESS, "--window-size=1280,900", "--virtual-time-budget=8000"]


NO_ROOM = "snapshots off: a snapshot of 900 MiB would not fit in the 300 MiB free on the disk"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    board = board_with_app(tmp_path)
    store, controller, token, app, v = (
        board.store, board.controller, board.token, board.app, board.release
    )  # fmt: skip
    store.create_build("b2", app.id)  # a deploy under way
    placement = Placement("webshop-web-1", "webshop", v, "web", 1, "host-1")
    store.replace_placements([], [placement], {"webshop": app.id})
    controller.soft.record(
        Heartbeat(
            host_id="host-1",
            hostname="rack1-node7",
            memory_mb=8192,
            cpus=4,
            instances=[
                InstanceStatus(
                    instance_id="webshop-web-1",
                    app="webshop",
                    release=v,
                    process_type="web",
                    state="up",
                    memory_mb=42.0,
                )
            ],
        ),
        time.monotonic(),
    )
    # What the servicehost pushed: webshop's Redis without room for its
    # snapshots, and a database a restore replaced.
    box = SecretBox(b"k" * 32)
    controller.services = ServiceBroker(controller.store, box, None)
    # webshop's Redis, held by the servicehost 10.0.0.41 (shown in its row).
    creds = {"app": "webshop", "kind": "redis", "host": "10.0.0.41", "port": 7000,
             "password": "pw", "url": "redis://:pw@10.0.0.41:7000/0"}  # fmt: skip
    store.bind_service(app.id, "redis", box.seal(creds), "10.0.0.41")
    controller.services.status["sh-1"] = ServiceHostStatus(
        servers=[
            ServerStatus(
                app="webshop",
                kind="redis",
                state="up",
                port=7000,
                snapshot_problem=NO_ROOM,
                redis_role="master",
                redis_lag_bytes=12,
            ),
            ServerStatus(app="other", kind="redis", state="up", snapshot_problem="not ours"),
        ],
        kept=[KeptCopy(app="webshop", kind="postgres", name="app_webshop__pre_r1", kept_at=1.0)],
        host_id="sh-1",
        sent_at=time.time(),
    )
    # Its PostgreSQL on a pair, as the pairs' watch last saw it (pgwatch.py).
    pair = PairRow("p1", ("sh-1", "sh-2"), ("10.0.0.41", "10.0.0.42"), 5434, 8009, 6432)
    store.add_service_pair(pair)
    store.set_app_pair(app.id, "p1")
    members = [
        {"name": "10.0.0.41", "role": "leader", "state": "running"},
        {"name": "10.0.0.42", "role": "sync_standby", "state": "streaming", "lag": 4096},
    ]
    seen = judge(pair, {"10.0.0.41": (200, {"members": members})}, time.time())
    health_of(controller).update([seen])
    try:
        with serving(controller) as base:
            yield base, token
    finally:
        controller.store.close()


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dashboard_renders_hosts_and_apps(served: tuple[str, str], tmp_path: Path) -> None:
    base, token = served
    page = f"{base}/dashboard?token={token}"
    dom = _chromium(["--dump-dom", page], tmp_path).stdout
    assert 'data-loaded="1"' in dom, dom[-2000:]
    assert "rack1-node7" in dom and "webshop" in dom and "web.1" in dom
    assert ">up<" in dom
    assert '<span class="building">building the image</span>' in dom
    assert f'<div class="service-problem">redis: {NO_ROOM}</div>' in dom  # in red
    assert "kept by restores: postgres app_webshop__pre_r1" in dom and "not ours" not in dom
    assert "services: redis on 10.0.0.41" in dom  # where its data is
    # Primary, standby and lag of its PostgreSQL and Redis pairs.
    assert "postgres pair p1: primary sh-1, standby sh-2 (4096 B behind)" in dom
    assert "redis: master sh-1:7000" in dom

    shot = tmp_path / "dashboard.png"
    _chromium([f"--screenshot={shot}", page], tmp_path / "second")
    assert shot.exists()
    img = Image.open(shot).convert("L")
    assert img.size == (1280, 900)
    lo, hi = img.getextrema()
    assert hi - lo > 100, "the screenshot is blank"
    # the header bar is dark and the page body is light: the stylesheet applied
    assert img.getpixel((5, 5)) < 80 and img.getpixel((640, 880)) > 200


def test_dashboard_without_token_shows_login(served: tuple[str, str], tmp_path: Path) -> None:
    base, _ = served
    dom = _chromium(["--dump-dom", f"{base}/dashboard"], tmp_path).stdout
    assert 'id="login"' in dom and 'id="login" hidden' not in dom
    assert "rack1-node7" not in dom
