"""The walking skeleton end to end: `roost up` as real processes, deploy,
serve through the router, redeploy, crash recovery, bad deploys, clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from roost.wire.cluster import ClusterConfig
from roost.wire.keys import generate_keypair
from roost.wire.messages import Ping
from roost.wire.node import Node
from roost.wire.rpc import RpcClient, RpcTimeout
from tests.conftest import REPO, wait_until
from tests.e2e.platform import Platform, running_platform

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    with running_platform() as p:
        yield p


def _copy_app(tmp_path: Path, name: str = "hello") -> Path:
    dest = tmp_path / name
    shutil.copytree(REPO / "examples" / "hello", dest)
    return dest


def test_deploy_serve_redeploy_restart(platform: Platform, tmp_path: Path) -> None:
    app_dir = _copy_app(tmp_path)
    platform.roost("apps", "create", "hello")
    r = platform.roost("deploy", str(app_dir))  # the name comes from .roost-app
    assert "is live" in r.stdout
    assert "image copied to host" in r.stdout  # a second copy before the release
    page = wait_until(
        lambda: (resp := platform.get("hello")).status_code == 200 and resp.text, 30, "hello's page"
    )
    assert "Hello from Roost!" in str(page)

    # Two web instances by default, each up with a port.
    instances = [i for i in platform.ps("hello") if i["process_type"] == "web"]
    assert len(instances) == 2 and all(i["state"] == "up" and i["port"] for i in instances)

    # Change the text and redeploy: the new text is served, old instances go.
    app_py = app_dir / "app.py"
    app_py.write_text(app_py.read_text().replace("Hello from Roost!", "Hello again, Roost!"))
    platform.roost("deploy", str(app_dir), "--app", "hello")
    wait_until(lambda: "Hello again, Roost!" in platform.get("hello").text, 30, "the new text")
    wait_until(
        lambda: all(i["release"] == 2 for i in platform.ps("hello")), 30, "old instances stopped"
    )
    for _ in range(10):  # round-robin over live instances never serves the old release
        assert "Hello again, Roost!" in platform.get("hello").text

    # Kill one instance's process: the runner restarts it.
    victim = next(i for i in platform.ps("hello") if i["state"] == "up")
    os.kill(int(victim["pid"]), signal.SIGKILL)  # type: ignore[call-overload]

    def restarted() -> bool:
        now = {i["instance_id"]: i for i in platform.ps("hello")}
        cur = now.get(victim["instance_id"])  # type: ignore[call-overload]
        return bool(
            cur
            and cur["pid"] != victim["pid"]
            and cur["state"] == "up"
            and int(cur["restarts"]) >= 1
        )  # type: ignore[call-overload]

    wait_until(restarted, 60, "the killed instance to be restarted")
    assert platform.get("hello").status_code == 200


def test_unknown_host_is_404_and_app_without_instances_503(platform: Platform) -> None:
    r = platform.get("no-such-app")
    assert r.status_code == 404
    platform.roost("apps", "create", "empty")
    wait_until(
        lambda: platform.get("empty").status_code == 503, 15, "503 for an app with no instance"
    )


@pytest.mark.parametrize(
    ("case", "mutate", "reason"),
    [
        ("missing-reqs", lambda d: (d / "requirements.txt").unlink(), "requirements"),
        (
            "broken-reqs",
            lambda d: (d / "requirements.txt").write_text(
                "flask>=3.0\nthis is not a requirement ===\n"
            ),
            "requirement",
        ),
        (
            "bad-entrypoint",
            lambda d: (d / "epio.ini").write_text(
                "[wsgi]\nrequirements = requirements.txt\nentrypoint = nosuchmodule:app\n"
            ),
            "nosuchmodule",
        ),
        (
            # No release phase: the instances' start is the import check, and
            # the release fails with their traceback's last line.
            "raises-at-import",
            lambda d: (d / "app.py").write_text(
                (d / "app.py").read_text() + "\nraise RuntimeError('boom at import')\n"
            ),
            "RuntimeError: boom at import",
        ),
        (
            # The build's import check passes; the process dies as soon as it runs.
            "exits-at-once",
            lambda d: (d / "Procfile").write_text(
                "web: python -c 'import sys; print(\"boom\"); sys.exit(3)'\n"
            ),
            "crashed",
        ),
    ],
)
def test_bad_deploy_fails_and_previous_release_keeps_serving(
    platform: Platform, tmp_path: Path, case: str, mutate: object, reason: str
) -> None:
    name = "steady"
    if platform.roost("apps", "info", name, check=False).returncode != 0:
        platform.roost("apps", "create", name)
        platform.roost("deploy", str(_copy_app(tmp_path, "good")), "--app", name)
    wait_until(lambda: platform.get(name).status_code == 200, 30, "the good release")
    bad = _copy_app(tmp_path, case)
    mutate(bad)  # type: ignore[operator]
    r = platform.roost("deploy", str(bad), "--app", name, check=False)
    assert r.returncode != 0
    assert reason.lower() in (r.stdout + r.stderr).lower()
    # How it ended, as the deploy's table has it (a tree the CLI's own check
    # refuses makes no build): a release that built but did not start is
    # rolled back, the good one keeping on serving; the others failed.
    started = re.search(r"^build (\w+)$", r.stderr, re.MULTILINE)
    built = case in ("exits-at-once", "raises-at-import")
    assert started is not None or not built, r.stderr
    if started is not None:
        [last] = json.loads(platform.roost("deploys", "--json", "-n", "1", "--app", name).stdout)
        ended = "rolled back" if built else "failed"
        assert last["build_id"] == started[1] and last["final"], last
        assert last["outcome"].startswith(ended + ":") and f"deploy {ended}:" in r.stderr
    assert platform.get(name).status_code == 200
    assert "Hello from Roost!" in platform.get(name).text


def test_a_deploy_no_host_has_room_for_fails_saying_why(platform: Platform, tmp_path: Path) -> None:
    """The scheduler places by reservation; an app whose instances no host
    can hold fails its deploy at once, saying so, instead of waiting
    "starting" until its rollout times out (issue 21's density finding)."""
    name = "roomless"
    platform.roost("apps", "create", name)
    # 64 GB an instance (the largest size): more of them than this host holds.
    copies = psutil.virtual_memory().total // (64 << 30) + 1
    platform.roost("scale", f"web={copies}:64G", "--app", name)
    r = platform.roost("deploy", str(_copy_app(tmp_path)), "--app", name, check=False)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "no host has room for" in r.stderr and "of 65536 MB each" in r.stderr, r.stderr
    info = json.loads(platform.roost("apps", "info", name, "--json").stdout)
    assert info["current_release"] is None, info


def _with_health(app_dir: Path, greeting: str, path: str, status: int) -> None:
    """Make the app greet with `greeting` and declare a check of `path`, which
    answers `status` (app.json, as Dokku's documentation writes it)."""
    app_py = app_dir / "app.py"
    text = app_py.read_text().replace("Hello from Roost!", greeting)
    text += f"\n\n@app.route({path!r})\ndef health() -> tuple[str, int]:\n"
    text += f"    return 'checked', {status}\n"
    app_py.write_text(text)
    check = {"type": "startup", "path": path, "attempts": 3, "timeout": 5, "wait": 1}
    (app_dir / "app.json").write_text(json.dumps({"healthchecks": {"web": [check]}}))


def test_health_checks_decide_whether_a_release_takes_traffic(
    platform: Platform, tmp_path: Path
) -> None:
    name = "checked"
    platform.roost("apps", "create", name)
    platform.roost("deploy", str(_copy_app(tmp_path, "good")), "--app", name)
    wait_until(lambda: platform.get(name).status_code == 200, 30, "the first release")

    # A release whose check answers 500: it never serves a request (the route
    # table never names its instances), the deploy fails with the check's
    # last answer, and the first release keeps serving throughout.
    bad = _copy_app(tmp_path, "unhealthy")
    _with_health(bad, "Unhealthy release", "/health", 500)
    seen: set[str] = set()
    done = asyncio.Event()

    async def watch() -> None:
        async with httpx.AsyncClient(headers={"Host": f"{name}.localhost"}) as client:
            while not done.is_set():
                r = await client.get(f"http://127.0.0.1:{platform.router_port}/", timeout=10)
                seen.add(f"{r.status_code} {r.text.strip()}")
                await asyncio.sleep(0.05)

    async def deploy() -> subprocess.CompletedProcess[str]:
        watcher = asyncio.create_task(watch())
        try:
            return await asyncio.to_thread(
                platform.roost, "deploy", str(bad), "--app", name, check=False
            )
        finally:
            done.set()
            await watcher

    r = asyncio.run(deploy())
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "failed its health check: GET /health answered 500 after 3 attempts" in out, out
    assert "v1 keeps serving" in out, out
    assert seen == {"200 Hello from Roost!"}, seen
    assert platform.get(name).text.strip() == "Hello from Roost!"

    # A release whose declared /up answers 200 goes live.
    good = _copy_app(tmp_path, "healthy")
    _with_health(good, "Healthy release", "/up", 200)
    r = platform.roost("deploy", str(good), "--app", name)
    assert "v3 is live" in r.stdout, r.stdout
    wait_until(lambda: "Healthy release" in platform.get(name).text, 30, "the healthy release")


def test_refusals_are_one_line(platform: Platform) -> None:
    r = platform.roost("apps", "create", "Not_Valid!", check=False)
    assert (
        r.returncode != 0
        and len(r.stderr.strip().splitlines()) == 1
        and "invalid app name" in r.stderr
    )
    platform.roost("apps", "create", "twice")
    r = platform.roost("apps", "create", "twice", check=False)
    assert (
        r.returncode != 0
        and len(r.stderr.strip().splitlines()) == 1
        and "already exists" in r.stderr
    )
    r = platform.roost("ps", "--app", "nobody-home", check=False)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "no app" in r.stderr


def test_client_without_cluster_key_cannot_talk_to_any_daemon(platform: Platform) -> None:
    cluster = ClusterConfig.load(platform.data / "cluster.json")

    async def probe() -> list[str]:
        answered = []
        async with Node(generate_keypair(), []) as node:
            for role in ("controller", "builder", "images"):
                for ep in cluster.of(role):
                    client = RpcClient(node, [ep])
                    try:
                        await client.call(Ping(), timeout=1.0, tries=1)
                        answered.append(ep.address)
                    except RpcTimeout:
                        pass
                    finally:
                        await client.close()
        return answered

    assert asyncio.run(probe()) == []


def test_day_two_operations(platform: Platform, tmp_path: Path) -> None:
    """config, scale, logs -f, releases, rollback, suspend/resume, domains."""
    name = "ops"
    platform.roost("apps", "create", name)
    platform.roost("deploy", str(_copy_app(tmp_path, name)), "--app", name)
    wait_until(lambda: platform.get(name).status_code == 200, 30, "ops to serve")

    # config set: a new release whose instances see the variable
    platform.roost("config", "set", "GREETING_WORD=bonjour", "--app", name)
    wait_until(
        lambda: platform.get(name, "/env/GREETING_WORD").text == "bonjour", 60, "the config var"
    )
    assert "GREETING_WORD=bonjour" in platform.roost("config", "--app", name).stdout

    # scale web to 3
    platform.roost("scale", "web=3", "--app", name)
    wait_until(
        lambda: (
            sum(1 for i in platform.ps(name) if i["state"] == "up" and i["process_type"] == "web")
            == 3
        ),
        60,
        "three web instances",
    )

    # logs -f receives a line an instance prints (gunicorn's access log)
    env = {k: v for k, v in os.environ.items() if k not in ("ROOST_API", "ROOST_TOKEN")}
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "roost",
            "--data",
            str(platform.data),
            "logs",
            "-f",
            "-n",
            "1",
            "--app",
            name,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        marker = "/env/LOG_MARKER_7f3a"
        seen: list[str] = []

        def marker_seen() -> bool:
            platform.get(name, marker)
            assert follower.stdout is not None
            import select

            while select.select([follower.stdout], [], [], 0.2)[0]:
                line = follower.stdout.readline()
                if not line:
                    break
                seen.append(line)
                if marker in line:
                    return True
            return False

        wait_until(marker_seen, 30, "the request's log line in `roost logs -f`")
    finally:
        follower.terminate()
        follower.wait(10)

    # releases and rollback
    releases = json.loads(platform.roost("releases", "--json", "--app", name).stdout)
    assert releases[0]["version"] == 2 and releases[0]["status"] == "active"
    assert "flask==" in releases[0]["lock"].lower()
    platform.roost("rollback", "--app", name)
    wait_until(
        lambda: platform.get(name, "/env/GREETING_WORD").text == "",
        60,
        "the rollback to v1's config",
    )
    assert "GREETING_WORD" not in platform.roost("config", "--app", name).stdout

    # suspend: a maintenance page; resume: served again
    platform.roost("suspend", "--app", name)
    wait_until(lambda: platform.get(name).status_code == 503, 30, "the maintenance page")
    assert platform.ps(name) == [] or all(i["state"] != "up" for i in platform.ps(name))
    platform.roost("resume", "--app", name)
    wait_until(lambda: platform.get(name).status_code == 200, 60, "ops to come back")

    # a custom domain routes to the app
    platform.roost("domains", "add", "www.ops-example.test", "--app", name)
    wait_until(
        lambda: (
            httpx.get(
                f"http://127.0.0.1:{platform.router_port}/",
                headers={"Host": "www.ops-example.test"},
                timeout=5,
            ).status_code
            == 200
        ),
        30,
        "the custom domain",
    )


def test_zz_restart_resumes_the_same_apps(platform: Platform) -> None:
    """Stopping `roost up` leaves nothing behind; a second one serves the same apps.

    (Named to run last in this module: it restarts the shared platform.)
    """
    wait_until(lambda: platform.get("hello").status_code == 200, 30, "hello before the restart")
    before = platform.get("hello").text
    platform.stop()
    platform.start()
    wait_until(lambda: platform.get("hello").status_code == 200, 90, "hello after the restart")
    assert platform.get("hello").text == before
    assert {a["name"] for a in json.loads(platform.roost("apps", "list", "--json").stdout)} >= {
        "hello",
        "ops",
        "steady",
    }


def test_cron_runs_once_per_slot_in_the_release_environment(
    platform: Platform, tmp_path: Path
) -> None:
    name = "crony"
    app_dir = _copy_app(tmp_path, name)
    with open(app_dir / "epio.ini", "a") as fh:
        fh.write("\n[cron]\necho cron ran for $ROOST_APP = * * * * *\n")
    platform.roost("apps", "create", name)
    platform.roost("deploy", str(app_dir), "--app", name)

    def cron_lines() -> list[str]:
        out = platform.roost("logs", "-n", "500", "--app", name).stdout
        return [ln for ln in out.splitlines() if "cron[cron]" in ln]

    wait_until(
        lambda: any("cron ran for crony" in ln for ln in cron_lines()), 90, "a cron run's output"
    )
    lines = cron_lines()
    assert any("exited with status 0" in ln for ln in lines)
    # One run per minute slot: never two "running" lines in the same minute.
    minutes = [ln.split()[0][:16] for ln in lines if "cron: running" in ln]
    assert len(minutes) == len(set(minutes))


def test_every_daemon_exposes_prometheus_metrics(platform: Platform) -> None:
    platform.get("hello")  # at least one routed request
    endpoints = json.loads((platform.data / "metrics.json").read_text())
    expected = {
        "controller": "roost_api_requests_total",
        "runner": "roost_runner_",
        "router": "roost_router_requests_total",
        "builder": "roost_builder_build",
        "gateway": "roost_gateway_",
    }
    for role, needle in expected.items():
        text = wait_until(
            lambda url=endpoints[role], needle=needle: (
                (r := httpx.get(url, timeout=5)).status_code == 200 and needle in r.text and r.text
            ),
            30,
            f"{role} metrics",
        )
        assert needle in str(text)
    if "servicehost" in endpoints:
        text = wait_until(
            lambda: httpx.get(endpoints["servicehost"], timeout=5).text, 30, "servicehost"
        )
        assert "roost_service" in str(text)
