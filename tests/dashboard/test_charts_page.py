"""The dashboard's charts in a real headless Chromium: an hour of an app's
traffic, latency, memory and CPU, fed to the controller as routers and
runners report them, drawn by uPlot, and saved as a screenshot (under the
test's tmp dir) that a person can look at."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from roost.controller.history import History
from roost.controller.scheduler import Placement
from roost.wire.messages import Heartbeat, InstanceStatus, RouterStats
from tests.dashboard.browser import Browser
from tests.dashboard.serving import board_with_app, serving

INSTANCES = ("webshop-web-1-v1-aaaaaa", "webshop-web-2-v1-bbbbbb")


def an_hour_of(history: History, end: float) -> None:
    """What two router workers and a runner would have reported over the
    last hour: daytime-shaped traffic, a burst of 5xx, a slow spell, and
    two instances whose memory grows."""
    totals = {"r1/1": [[0] * 5, [0] * 12], "r2/1": [[0] * 5, [0] * 12]}
    cpu = dict.fromkeys(INSTANCES, 0.0)
    start = end - 3600
    for k in range(361):
        t = start + 10 * k
        for n, (source, (requests, latency)) in enumerate(totals.items()):
            rate = 40 + 25 * math.sin(k / 40) + 5 * n
            requests[1] += int(rate * 10)  # 2xx
            requests[3] += int(rate * 0.3)  # 4xx
            if 200 <= k < 215:
                requests[4] += 60  # the 5xx burst
            slow = 0.3 if 120 <= k < 160 else 0.05
            latency[1] += int(rate * 10 * (0.8 - slow))  # <= 10 ms
            latency[3] += int(rate * 10 * 0.2)  # <= 50 ms
            latency[6] += int(rate * 10 * slow)  # <= 500 ms
            history.router(
                RouterStats(
                    source=source,
                    started=start,
                    requests={"webshop": list(requests)},
                    latency={"webshop": list(latency)},
                ),
                t,
            )
        statuses = []
        for i, inst in enumerate(INSTANCES):
            cpu[inst] += 10 * (0.15 + 0.1 * i + 0.1 * math.sin(k / 30))
            statuses.append(
                InstanceStatus(
                    instance_id=inst,
                    app="webshop",
                    release=1,
                    process_type="web",
                    state="up",
                    memory_mb=90 + 20 * i + k * 0.08,
                    cpu_seconds=cpu[inst],
                )
            )
        history.heartbeat(Heartbeat(host_id="host-1", hostname="n1", instances=statuses), t)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    board = board_with_app(tmp_path)
    placements = [
        Placement(inst, "webshop", board.release, "web", i + 1, "host-1")
        for i, inst in enumerate(INSTANCES)
    ]
    board.store.replace_placements([], placements, {"webshop": board.app.id})
    an_hour_of(board.controller.history, time.time())
    try:
        with serving(board.controller) as base:
            yield base, board.token
    finally:
        board.controller.store.close()


CHARTS = ("requests per second", "latency", "memory per instance", "CPU per instance")


def test_charts_of_the_last_hour_and_day(served: tuple[str, str], tmp_path: Path) -> None:
    base, token = served
    with Browser(tmp_path / "profile", 1280, 1400) as b:
        b.open(f"{base}/dashboard?token={token}")
        b.wait("document.body.dataset.loaded === '1'", "the board")
        b.wait("document.querySelectorAll('#app-charts canvas').length === 4", "four charts")
        drawn = b.js(
            "[...document.querySelectorAll('#app-charts .chart')]"
            ".map((c) => [c.dataset.chart, Number(c.dataset.points)])"
        )
        assert [name for name, _ in drawn] == list(CHARTS)
        points = dict(drawn)
        # an hour of 10 s points: 2xx, 4xx and 5xx series; p50, p95, p99; two instances
        assert points["requests per second"] > 2 * 300
        assert points["latency"] > 3 * 300
        assert points["memory per instance"] > 2 * 300
        assert points["CPU per instance"] > 2 * 300
        legends = b.js("document.querySelector('#app-charts').innerText")
        assert "5xx" in legends and "1xx" not in legends  # all-zero series are left out
        assert "p99" in legends and "web.1 v1" in legends and "web.2 v1" in legends
        b.js("document.querySelector('#app-view').scrollIntoView()")
        shot = b.screenshot(tmp_path / "charts-hour.png")

        b.click('[data-span="day"]')
        b.wait("document.querySelector('#app-charts').dataset.span === 'day'", "the day's charts")
        day = b.js(
            "Object.fromEntries([...document.querySelectorAll('#app-charts .chart')]"
            ".map((c) => [c.dataset.chart, Number(c.dataset.points)]))"
        )
        # 5 min points over a day of which one hour has data: 12 or 13 per series
        assert 2 * 12 <= day["requests per second"] <= 3 * 13
        b.screenshot(tmp_path / "charts-day.png")

    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 1400)
    # The charts' lines are drawn in their colours: the 2xx green is there.
    colours = {c for _, c in img.getcolors(1 << 20) or []}
    assert any(g > 120 and r < 60 and bl < 100 for r, g, bl in colours), "no 2xx line drawn"
    print(f"screenshots: {shot} and {tmp_path / 'charts-day.png'}")


def test_metrics_api_needs_access(served: tuple[str, str]) -> None:
    base, token = served
    ok = httpx.get(
        f"{base}/api/apps/webshop/metrics?window=day", headers={"Authorization": f"Bearer {token}"}
    )
    assert ok.status_code == 200 and ok.json()["step"] == 300
    assert httpx.get(f"{base}/api/apps/webshop/metrics").status_code == 401
    bad = httpx.get(
        f"{base}/api/apps/webshop/metrics?window=week", headers={"Authorization": f"Bearer {token}"}
    )
    assert bad.status_code == 422
    assert httpx.get(f"{base}/dashboard/../index.html").status_code == 404
    assert httpx.get(f"{base}/dashboard/vendor/uPlot.iife.min.js").text.startswith("/*! uPlot")
