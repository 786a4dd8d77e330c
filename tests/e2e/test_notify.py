"""Alerts through the real platform (issue 18): `roost notify add` a signed
webhook (a receiver started here checks the HMAC) for an app and a mailto:
target for the platform (the controllers' ROOST_SMTP_URL points at an SMTP
server started here); a deploy fires deploy-started and deploy-succeeded to
both; a malformed URL is refused by the CLI with the reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, wait_until
from tests.controller.notifykit import mailbox, receiving
from tests.e2e.platform import running_platform

pytestmark = pytest.mark.e2e

SECRET = "a webhook secret"


def test_a_deploy_fires_started_and_succeeded(tmp_path: Path) -> None:
    app_dir = tmp_path / "hello"
    shutil.copytree(REPO / "examples" / "hello", app_dir)
    with receiving() as hook, mailbox() as box:
        env = {
            "ROOST_SMTP_URL": f"smtp://127.0.0.1:{box.port}",
            "ROOST_SMTP_FROM": "roost@e2e.test",
        }
        with running_platform(env=env) as platform:
            platform.roost("apps", "create", "greet")
            bad = platform.roost(
                "notify", "add", "ftp://example.com/x", "--app", "greet", check=False
            )
            assert bad.returncode != 0 and "http(s)://" in bad.stdout + bad.stderr
            platform.roost("notify", "add", hook.url, "--app", "greet", "--secret", SECRET)
            platform.roost("notify", "add", "mailto:ops@e2e.test")  # the platform's (admin)

            r = platform.roost("deploy", str(app_dir), "--app", "greet")
            assert "is live" in r.stdout

            def hook_events() -> list[str]:
                return [json.loads(body)["event"] for _, body in hook.got]

            wait_until(
                lambda: {"deploy-started", "deploy-succeeded"} <= set(hook_events()),
                60, "both alerts at the webhook",
            )  # fmt: skip
            assert hook.signed(SECRET)
            sent = [json.loads(body) for _, body in hook.got]
            assert all(s["app"] == "greet" for s in sent)
            assert hook_events().index("deploy-started") < hook_events().index("deploy-succeeded")

            def subjects() -> list[str]:
                return [str(msg["Subject"]) for _, msg in box.mail]

            wait_until(lambda: len(subjects()) >= 2, 60, "both alerts by e-mail")
            assert any(s.startswith("[roost] deploy-started: greet:") for s in subjects())
            assert any(
                s.startswith("[roost] deploy-succeeded: greet: v1 is live") for s in subjects()
            )

            listed = json.loads(platform.roost("notify", "list", "--json").stdout)
            assert sorted((t["app"] or "", t["delivered"] >= 2) for t in listed) == [
                ("", True), ("greet", True),
            ]  # fmt: skip
            log = json.loads(platform.roost("notify", "log", "--app", "greet", "--json").stdout)
            assert {(d["event"], d["state"]) for d in log} >= {
                ("deploy-started", "delivered"), ("deploy-succeeded", "delivered"),
            }  # fmt: skip
