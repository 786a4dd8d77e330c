"""Issue 22: a hostile app, deployed through the real platform, tries to reach
what is not its own from its instance, a `run` session, a cron job and its
build; every attempt fails. Also the limits: a fork bomb and a memory hog."""

from __future__ import annotations

import psutil
import pytest

from tests.conftest import wait_until
from tests.security.conftest import HERE, World, assert_blocked

pytestmark = pytest.mark.e2e


def test_instance_reaches_nothing_but_its_own(world: World) -> None:
    r = world.platform.get("hostile")
    assert r.status_code == 200, r.text
    results = world.probes(r.text, "instance")
    assert len(results) > 10
    # The other app's Redis and database were really tried (with a reason).
    assert results["redis victim"].startswith("blocked (")
    assert results["database victim"].startswith("blocked (")
    assert "no database credentials" not in results["database victim"]
    assert_blocked(results)


def test_run_session_reaches_nothing_but_its_own(world: World) -> None:
    r = world.ssh("run", "hostile", "python probe.py run")
    assert r.returncode == 0, r.stderr
    assert_blocked(world.probes(r.stdout, "run"))


def test_build_scripts_reach_nothing_and_leave_nothing_behind(world: World) -> None:
    assert_blocked(world.probes(world.deploy_output, "build"))
    left = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if p.info["cmdline"] == ["sleep", "4242"]
    ]
    assert left == [], "a process the build started outlived it"


def test_static_link_to_root_is_not_served(world: World) -> None:
    assert world.platform.get("hostile", "/static/ok.txt").text == "hello\n"
    for path in ("/static/root/etc/passwd", "/static/root/etc/hostname"):
        r = world.platform.get("hostile", path)
        assert r.status_code == 404 and "root:" not in r.text


def test_fork_bomb_is_held_and_other_apps_keep_serving(world: World) -> None:
    p = world.platform

    def bomb_line() -> str:
        logs = p.roost("logs", "-n", "2000", "--app", "hostile").stdout
        return next((ln for ln in logs.splitlines() if "BOMB stopped after" in ln), "")

    wait_until(bomb_line, 60, "the fork bomb to hit its limit")
    forks = int(bomb_line().split("BOMB stopped after ")[1].split()[0])
    assert 0 < forks < 512  # ROOST_TENANT_PIDS_MAX (threads and the shell count too)
    for _ in range(20):
        assert p.get("victim").text == "victim ok\n"
    assert p.get("hostile", "/static/ok.txt").status_code == 200


def test_memory_hog_is_oom_killed_reported_and_others_serve(world: World) -> None:
    p = world.platform
    p.roost("apps", "create", "hog")
    r = p.roost("deploy", str(HERE / "hog"), "--app", "hog", check=False)
    assert r.returncode != 0
    assert "out of memory" in r.stdout + r.stderr, r.stdout + r.stderr
    logs = p.roost("logs", "-n", "500", "--app", "hog").stdout
    assert "ran out of memory (limit 256 MB)" in logs
    assert p.get("victim").text == "victim ok\n"


def test_a_live_instance_that_runs_out_of_memory_shows_it_in_ps(world: World) -> None:
    p = world.platform
    p.roost("apps", "create", "leak")
    p.roost("deploy", str(HERE / "leak"), "--app", "leak")

    def ps_says() -> str:
        out = p.roost("ps", "--app", "leak").stdout
        return out if "ran out of memory (limit 256 MB)" in out else ""

    wait_until(ps_says, 90, "roost ps to show the OOM kill")
    rows = p.ps("leak")
    assert any("ran out of memory" in str(r.get("last_error")) for r in rows)
    assert {r["memory_limit_mb"] for r in rows} == {256}
    assert p.get("victim").text == "victim ok\n"
    # The formation's size is the cgroup's limit: a smaller one is met sooner.
    p.roost("scale", "leak=:128M", "--app", "leak")

    def limit_128() -> bool:
        logs = p.roost("logs", "-n", "300", "--app", "leak").stdout
        return "ran out of memory (limit 128 MB)" in logs

    wait_until(limit_128, 90, "the leak to run out of 128 MB")
    assert {r["memory_limit_mb"] for r in p.ps("leak")} == {128}


def test_cron_job_reaches_nothing_but_its_own(world: World) -> None:
    p = world.platform

    def cron_output() -> str:
        logs = p.roost("logs", "-n", "3000", "--app", "hostile").stdout
        return "\n".join(ln for ln in logs.splitlines() if "PROBES cron" in ln)

    wait_until(cron_output, 130, "a cron run of the probes")
    assert_blocked(world.probes(cron_output(), "cron"))
