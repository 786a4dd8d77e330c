"""Issue 22 through one real platform (one `world`: built once for both
halves, which as two modules were built twice, once on each worker they
went to, ~25 s each).

What runs: a hostile app, deployed through the real platform, tries to reach
what is not its own from its instance, a `run` session, a cron job and its
build; every attempt fails. Also the limits: a fork bomb and a memory hog.

The names and the API, last (a guesser's lockout must touch nothing the
runtime half uses): a tenant tries to take another app's hostname, a
collaborator tries owner powers, a guesser tries passwords, and a deleted
app's name is taken again."""

from __future__ import annotations

import uuid

import httpx
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


# ---------------------------------------------------------------- names and the API

PASSWORD = "correct horse battery"


def account(world: World, email: str) -> str:
    """A plain (not admin) account, and a token for it from a real login."""
    r = world.api("POST", "/accounts", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = httpx.post(
        f"http://127.0.0.1:{world.platform.api_port}/api/login",
        json={"email": email, "password": PASSWORD},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


@pytest.fixture(scope="module")
def mallory(world: World) -> str:
    token = account(world, "mallory@example.com")
    r = world.api("POST", "/apps", token=token, json={"name": "mal"})
    assert r.status_code == 201, r.text
    return token


def test_a_domain_at_or_under_another_apps_hostname_is_refused(world: World, mallory: str) -> None:
    for name in ("victim.localhost", "www.victim.localhost", "VICTIM.localhost.", "localhost"):
        r = world.api("POST", "/apps/mal/domains", token=mallory, json={"hostname": name})
        assert r.status_code in (403, 409, 422), (name, r.status_code, r.text)
    r = world.api("GET", "/apps/mal/domains", token=mallory)
    assert r.json() == []
    assert world.platform.get("victim").text == "victim ok\n"


def test_a_collaborator_cannot_delete_or_take_over(world: World, mallory: str) -> None:
    r = world.api("POST", "/apps/victim/collaborators", json={"email": "mallory@example.com"})
    assert r.status_code == 201, r.text
    try:
        assert world.api("DELETE", "/apps/victim", token=mallory).status_code == 403
        r = world.api(
            "POST", "/apps/victim/domains", token=mallory, json={"hostname": "shop.example.com"}
        )
        assert r.status_code == 403
        r = world.api(
            "POST", "/apps/victim/collaborators", token=mallory, json={"email": "x@example.com"}
        )
        assert r.status_code == 403
        # What a collaborator may do, it still may: read the app's processes.
        assert world.api("GET", "/apps/victim/ps", token=mallory).status_code == 200
    finally:
        world.api("DELETE", "/apps/victim/collaborators/mallory@example.com")
    assert world.platform.get("victim").text == "victim ok\n"
    assert world.api("GET", "/apps/victim").status_code == 200


def test_a_login_brute_force_is_cut_off(world: World, mallory: str) -> None:
    email = "eve@example.com"
    r = world.api("POST", "/accounts", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    login = f"http://127.0.0.1:{world.platform.api_port}/api/login"
    codes = [
        httpx.post(
            login, json={"email": email, "password": f"guess-{i:04d}"}, timeout=60
        ).status_code
        for i in range(7)
    ]
    assert codes[:5] == [401] * 5 and codes[-1] == 429, codes
    # The right password does not help the guesser now...
    r = httpx.post(login, json={"email": email, "password": PASSWORD}, timeout=60)
    assert r.status_code == 429 and "Retry-After" in r.headers
    # ...while another account still logs in.
    r = httpx.post(login, json={"email": "mallory@example.com", "password": PASSWORD}, timeout=60)
    assert r.status_code == 200, r.text


def test_a_reused_name_starts_empty_and_is_another_user(world: World) -> None:
    p = world.platform
    p.roost("apps", "create", "reused")
    p.roost("deploy", str(HERE / "victim"), "--app", "reused")
    marker = uuid.uuid4().hex
    r = world.ssh("run", "reused", f"echo {marker} > $ROOST_DATA_DIR/left.txt; id -u")
    assert r.returncode == 0, r.stderr
    first_uid = int(r.stdout.split()[-1])
    p.roost("apps", "delete", "reused")
    p.roost("apps", "create", "reused")
    p.roost("deploy", str(HERE / "victim"), "--app", "reused")
    wait_until(lambda: p.get("reused").status_code == 200, 60, "the new app to serve")
    r = world.ssh("run", "reused", "ls -A $ROOST_DATA_DIR; id -u")
    assert r.returncode == 0, r.stderr
    assert "left.txt" not in r.stdout
    assert int(r.stdout.split()[-1]) != first_uid, "the new app got the old app's uid"
