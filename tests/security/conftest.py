"""A real `roost up` with a victim app and a hostile one deployed through it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_until
from tests.e2e.platform import Platform, running_platform
from tests.netns import own_network_namespace

HERE = Path(__file__).resolve().parent


@dataclass
class World:
    platform: Platform
    hostile_dir: Path
    deploy_output: str
    ssh_key: Path

    def probes(self, output: str, mode: str) -> dict[str, str]:
        for line in output.splitlines():
            _, marker, rest = line.partition(f"PROBES {mode} ")
            if marker:
                return json.loads(rest)  # type: ignore[no-any-return]
        raise AssertionError(f"no PROBES {mode} line in:\n{output[-3000:]}")

    def api(self, method: str, path: str, token: str | None = None, **kw: object) -> httpx.Response:
        """The controller's HTTP API, as the admin unless `token` says otherwise."""
        if token is None:
            return _admin(self.platform, method, path, **kw)
        return httpx.request(
            method,
            f"http://127.0.0.1:{self.platform.api_port}/api{path}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            **kw,  # type: ignore[arg-type]
        )

    def ssh(self, *command: str) -> subprocess.CompletedProcess[str]:
        opts = [
            "-i", str(self.ssh_key), "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
        ]  # fmt: skip
        return subprocess.run(
            ["ssh", *opts, "-p", str(self.platform.ssh_port), "vcs@127.0.0.1", *command],
            capture_output=True,
            text=True,
            timeout=120,
        )


def leaked(results: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in results.items() if not v.startswith("blocked")}


def assert_blocked(results: dict[str, str]) -> None:
    bad = leaked(results)
    assert not bad, "the hostile app got through:\n" + "\n".join(
        f"  {k}: {v}" for k, v in sorted(bad.items())
    )


def _admin(p: Platform, method: str, path: str, **kw: object) -> httpx.Response:
    return httpx.request(
        method,
        f"http://127.0.0.1:{p.api_port}/api{path}",
        headers={"Authorization": f"Bearer {p.token}"},
        timeout=60,
        **kw,  # type: ignore[arg-type]
    )


def _targets(p: Platform) -> dict[str, object]:
    data = p.data
    files = [data / "api.json", data / "cluster.json", data / "state.db"]
    files += [data / "controller" / "admin.token"]
    files += sorted((data / "keys").iterdir())
    # The victim's live data directory (issue 17): its secret is really there.
    live = data / "servicehost" / "appdata" / "victim"
    wait_until(lambda: (live / "secret.txt").exists(), 60, "the victim's secret in its tree")
    files += [live / "secret.txt"]
    files += sorted((data / "runner" / "apps" / "victim" / "bundle").glob("*/bundle_config.py"))
    files += sorted((data / "runner" / "images").glob("images/*/app/app.py"))
    assert any("bundle_config" in str(f) for f in files) and any("images" in str(f) for f in files)
    cluster = json.loads((data / "cluster.json").read_text())
    ports: dict[str, tuple[str, int]] = {"api": ("127.0.0.1", p.api_port)}
    victim = [i for i in p.ps("victim") if i.get("port")]
    assert victim, "the victim has no instance port"
    ports["victim instance"] = ("127.0.0.1", int(victim[0]["port"]))  # type: ignore[call-overload]
    for role, eps in cluster.get("endpoints", {}).items():
        for ep in eps[:1]:
            host, _, port = ep["address"].removeprefix("tcp://").rpartition(":")
            ports[f"{role} (zeromq)"] = (host, int(port))
    services = {}
    for kind in ("redis", "postgres"):
        r = _admin(p, "GET", f"/apps/victim/services/{kind}")
        assert r.status_code == 200, r.text
        services[kind] = r.json()
    redis, pg = services["redis"], services["postgres"]
    return {
        "redis": {"victim": [redis["host"], redis["port"]]},
        "databases": {"victim": [pg["host"], pg["port"], pg["database"]]},
        "platform_uid": os.getuid(),
        "files": [str(f) for f in files],
        "dirs": [
            *(str(d) for d in (data, data / "runner", data / "keys", data / "builder")),
            *(str(d) for d in (live.parent, live)),
        ],
        "writable_by_nobody": [str(data / "builder" / "uv-cache"), str(live.parent), str(live)],
        "ports": ports,
    }


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("security")
    # The real firewall, in a network namespace of this test's own (the
    # platform and this thread's clients with it: tests/netns.py says why);
    # tests/conftest.py turns it off for the platforms of other tests.
    with contextlib.ExitStack() as stack:
        outside = stack.enter_context(own_network_namespace(f"roost-sec-{os.getpid()}"))
        # As a platform runs for real: on the disk (what tenants write there
        # is not memory, which a tmpfs's pages would count against the
        # cgroup limits these tests prove), backups on their schedule.
        env = {"ROOST_FIREWALL": "on", "ROOST_BACKUP_SCHEDULE": "on", **outside.env}
        p = stack.enter_context(running_platform(env, tmpfs=False))
        p.roost("apps", "create", "victim")
        p.roost("deploy", str(HERE / "victim"), "--app", "victim")
        wait_until(lambda: p.get("victim").status_code == 200, 60, "the victim to serve")
        hostile = work / "hostile"
        shutil.copytree(HERE / "hostile", hostile)
        # A setuid copy of `id`, and a static "file" that is a link to /.
        shutil.copy("/usr/bin/id", hostile / "suid-id")
        os.chmod(hostile / "suid-id", 0o4755 | stat.S_IXGRP | stat.S_IXOTH)
        (hostile / "static" / "root").symlink_to("/")
        (hostile / "targets.json").write_text(json.dumps(_targets(p), indent=1))
        p.roost("apps", "create", "hostile")
        r = p.roost("deploy", str(hostile), "--app", "hostile")
        key = work / "id_admin"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        token = p.token
        httpx.post(
            f"http://127.0.0.1:{p.api_port}/api/keys",
            json={"key": (work / "id_admin.pub").read_text()},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ).raise_for_status()
        yield World(p, hostile, r.stdout + r.stderr, key)
