"""The dashboard acts, through the real platform: in a headless Chromium an
owner clicks restart, scale, roll back, suspend and resume, and edits config
vars, each confirmed in a dialog (and one cancelled, which changes nothing);
the platform does what was clicked. The app's live charts are saved as a
screenshot under the test's tmp dir."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.dashboard.browser import Browser
from tests.e2e.platform import Platform, running_platform

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
APP = "clicks"


def api(p: Platform, path: str) -> Any:
    r = httpx.get(
        f"http://127.0.0.1:{p.api_port}/api{path}",
        headers={"Authorization": f"Bearer {p.token}"},
        timeout=10,
    )
    r.raise_for_status()
    return r.json()


def said(b: Browser, words: str) -> str:
    """Wait for the panel's result line to contain `words`; its text."""
    text: str = b.wait(
        f"(() => {{ const t = (document.querySelector('#action-result') || {{}}).textContent || '';"
        f" return t.includes({words!r}) ? t : ''; }})()",
        f"the dashboard to say {words!r}",
        timeout=120,
    )
    return text


def confirm(b: Browser, button: str, answer: str = "#confirm-yes") -> str:
    b.click(button)
    question: str = b.wait(
        "document.querySelector('#confirm').open && "
        "document.querySelector('#confirm-text').textContent",
        "the confirmation",
    )
    b.click(answer)
    b.wait("!document.querySelector('#confirm').open", "the dialog to close")
    return question


def serving(p: Platform) -> int:
    return p.get(APP).status_code


def test_an_owner_acts_on_an_app_from_the_dashboard(tmp_path: Path) -> None:
    with running_platform() as p:
        app_dir = tmp_path / APP
        shutil.copytree(REPO / "examples" / "hello", app_dir)
        p.roost("apps", "create", APP)
        assert "is live" in p.roost("deploy", str(app_dir), "--app", APP).stdout
        wait_until(lambda: serving(p) == 200, 120, "the app to answer")
        releases = lambda: [r["version"] for r in api(p, f"/apps/{APP}/releases")]  # noqa: E731
        assert releases() == [1]

        with Browser(tmp_path / "profile", 1280, 1300) as b:
            b.open(f"http://127.0.0.1:{p.api_port}/dashboard?token={p.token}")
            b.wait(
                f"document.querySelector('#app-pick') && "
                f"document.querySelector('#app-pick').value === {APP!r} && "
                "!!document.querySelector('[data-action=restart]')",
                "the app panel",
            )

            # Cancelled: nothing happens.
            question = confirm(b, "[data-action=restart]", "#confirm-no")
            assert question.startswith(f"Restart {APP}?")
            assert releases() == [1]

            # A config var, added: a new release with it.
            b.type_into("#new-var", "GREETING")
            b.type_into("#new-value", "hello from the dashboard")
            assert "Set GREETING" in confirm(b, "[data-action=config-add]")
            said(b, "set GREETING: release v2")
            assert api(p, f"/apps/{APP}/config")["GREETING"] == "hello from the dashboard"

            # Scaled: as many web instances run as were asked for.
            want = 1 if api(p, f"/apps/{APP}/formation")["web"] != 1 else 2
            b.type_into('input.qty[data-process="web"]', str(want))
            assert f"web={want}" in confirm(b, "[data-action=scale]")
            said(b, f"formation: web={want}")
            assert api(p, f"/apps/{APP}/formation")["web"] == want
            wait_until(
                lambda: sum(1 for i in p.ps(APP) if i.get("state") == "up") == want,
                180,
                f"{want} instances up",
            )

            # Restarted: a fresh release of the same code and config. What is
            # said comes with the panel already drawn again, so the next choice
            # (a release to roll back to) is not redrawn under the pointer.
            b.js(
                "(() => { window.seen = []; const note = (what) => () => window.seen.push(what);"
                " new MutationObserver(note('said')).observe(document.querySelector("
                "'#action-result'), {childList: true, characterData: true, subtree: true});"
                " new MutationObserver(note('drawn')).observe(document.querySelector("
                "'#app-panel'), {childList: true}); })()"
            )
            confirm(b, "[data-action=restart]")
            said(b, "restarting: release v3")
            assert b.js("window.seen")[0] == "drawn"

            # Rolled back to v1: its config too (GREETING goes).
            b.wait(
                "[...document.querySelectorAll('#rollback-to option')].some((o) => o.value == 1)",
                "v1 among the releases to roll back to",
            )
            b.js("document.querySelector('#rollback-to').value = '1'")
            assert "back to v1" in confirm(b, "[data-action=rollback]")
            said(b, "rolled back to v1: release v4")
            assert "GREETING" not in api(p, f"/apps/{APP}/config")

            # Suspended: visitors get the suspended page; resumed: the app again.
            confirm(b, "[data-action=suspend]")
            said(b, f"{APP} suspended")
            wait_until(lambda: serving(p) != 200, 120, "the suspended page")
            b.wait("!!document.querySelector('[data-action=resume]')", "a Resume button")
            confirm(b, "[data-action=resume]")
            said(b, f"{APP} resumed")
            wait_until(lambda: serving(p) == 200, 180, "the app to answer again")

            # Traffic shows in the charts (routers report every 5 s).
            for _ in range(30):
                p.get(APP)
            p.get(APP, "/no-such-page")
            b.wait(
                "(() => { const c = document.querySelector('#app-charts .chart');"
                " return c && Number(c.dataset.points) > 0; })()",
                "requests in the chart",
                timeout=90,
            )
            b.js("document.querySelector('#app-view').scrollIntoView()")
            shot = b.screenshot(tmp_path / "dashboard-actions.png")
            print(f"screenshot: {shot}")
        events = [e["kind"] for e in api(p, "/dashboard")["events"]]
        assert "scale" in events
