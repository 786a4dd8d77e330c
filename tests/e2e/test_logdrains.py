"""Log drains through the whole platform: an app's instance, router and
platform lines reach a real rsyslogd over TLS, while a dead drain beside it
fails, drops what it cannot hold, and slows nothing: the app keeps serving."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port, wait_until
from tests.controller.drainkit import Rsyslog, make_ca, rsyslogd
from tests.e2e.platform import Platform, running_platform

pytestmark = pytest.mark.e2e

QUEUE = 50  # lines a drain holds (ROOST_LOG_DRAIN_QUEUE): the dead one soon drops


@pytest.fixture
def drained(tmp_path: Path) -> Iterator[tuple[Platform, Rsyslog]]:
    ca = make_ca(tmp_path / "ca")
    with rsyslogd(tmp_path / "rsyslog", ca) as r:
        env = {
            "ROOST_LOG_DRAIN_CA": str(ca.ca),
            "ROOST_LOG_DRAIN_QUEUE": str(QUEUE),
            "ROOST_LOG_DRAIN_PRIVATE": "on",  # the receivers are on loopback
        }
        with running_platform(env=env) as p:
            yield p, r


def _drains(p: Platform, app: str) -> dict[str, dict[str, object]]:
    rows = json.loads(p.roost("drains", "list", app, "--json").stdout)
    return {str(r["url"]): r for r in rows}


def test_drains_get_instance_router_and_platform_lines(
    drained: tuple[Platform, Rsyslog], tmp_path: Path
) -> None:
    p, rsyslog = drained
    app_dir = tmp_path / "hello"
    shutil.copytree(REPO / "examples" / "hello", app_dir)
    p.roost("apps", "create", "drained")
    bad = p.roost("drains", "add", "drained", "syslog://logs.example.com", check=False)
    assert bad.returncode != 0 and "names its port" in bad.stderr
    good = f"syslog+tls://localhost:{rsyslog.tls}"
    dead = f"syslog://127.0.0.1:{free_port()}"  # nothing listens there
    p.roost("drains", "add", "drained", good)
    p.roost("drains", "add", "drained", dead)
    p.roost("deploy", str(app_dir), "--app", "drained")
    for i in range(100):  # the dead drain's 50 are soon full: it drops
        r = p.get("drained", f"/?n={i}")
        assert r.status_code == 200 and "Hello from Roost!" in r.text

    def sources() -> set[str]:
        return {app_name for host, app_name, *_ in rsyslog.records() if host == "drained"}

    def last_request() -> bool:
        router = [m for _h, a, _p, _t, _pri, m in rsyslog.records() if a == "router"]
        return any('"GET /?n=99 HTTP/1.1" 200' in m and "app=drained" in m for m in router)

    wait_until(lambda: sources() >= {"app", "router", "roost"}, 60, "all three kinds of line")
    wait_until(last_request, 30, "the router's line of the last request")

    def shown() -> dict[str, dict[str, object]] | None:
        d = _drains(p, "drained")
        ok = d[good]["state"] == "delivering" and d[dead]["state"] == "failing"
        return d if ok and int(d[dead]["dropped"]) > 0 else None  # type: ignore[call-overload]

    d = wait_until(shown, 60, "drains list to show one delivering, one failing and dropping")
    assert isinstance(d, dict)
    assert "Connection refused" in str(d[dead]["last_error"])
    # (The good drain's queue is as small: a burst of router lines larger
    # than it may drop its oldest too, so only delivery is asserted there.)
    assert int(d[good]["delivered"]) > 0 and not d[good]["last_error"]
    table = p.roost("drains", "list", "drained").stdout
    assert "failing" in table and "refused" in table  # (rich wraps at 80 columns)

    p.roost("drains", "remove", "drained", str(d[dead]["id"]))
    assert list(_drains(p, "drained")) == [good]
    # Retention through the CLI: shown, set, back to the default.
    assert (
        "5000 lines (the platform's default), no age limit"
        in p.roost("log-retention", "drained").stdout
    )
    out = p.roost("log-retention", "drained", "--lines", "20000", "--days", "7").stdout
    assert "keeps 20000 lines, 7 days" in out
    assert "keeps 20000 lines, 3 days" in p.roost("log-retention", "drained", "--days", "3").stdout
    assert "default" in p.roost("log-retention", "drained", "--default").stdout
    bad = p.roost("log-retention", "drained", "--lines", "10", check=False)
    assert bad.returncode != 0 and "1500 to" in bad.stderr
