"""The sentinels' configuration from `roost cluster init` (no processes) and
`roost sentinel`, a host's sentinel alone (a real daemon and redis-server)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from roost.cli.main import cli
from roost.proc.exits import ConfigError
from roost.servicehost import sentinelproc
from roost.servicehost.redispairs import SENTINEL_KEY
from roost.servicehost.resp import RedisError
from roost.servicehost.sentineld import own_host
from roost.wire.cluster import ClusterConfig, Endpoint
from tests.conftest import free_port

SERVICEHOSTS = ["10.9.1.1", "10.9.1.2"]
CONTROLLER = "10.9.1.3"
RUNNER = "10.9.1.4"


def _files(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def _init(out: Path, servicehosts: list[str]) -> str:
    r = CliRunner().invoke(
        cli,
        [
            "cluster", "init", "--controllers", CONTROLLER, "--runners", RUNNER,
            "--servicehosts", ",".join(servicehosts), "--out", str(out),
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return "".join(r.output.split())  # (rich wraps long lines, paths too)


def test_paired_servicehosts_and_controllers_share_a_sentinel_password(tmp_path: Path) -> None:
    out = tmp_path / "bundles"
    said = _init(out, SERVICEHOSTS)
    key = f"keys/{SENTINEL_KEY}"
    secrets = {h: _files(out / f"{h}.tar.gz").get(key) for h in [*SERVICEHOSTS, CONTROLLER]}
    assert len(set(secrets.values())) == 1 and None not in secrets.values()
    assert key not in _files(out / f"{RUNNER}.tar.gz")
    # The controller's host runs a sentinel of its own; a servicehost runs its own inside.
    assert re.search(rf"{CONTROLLER}\.tar\.gz:controller,[a-z,]*sentinel", said)
    assert re.search(rf"{SERVICEHOSTS[0]}\.tar\.gz:servicehost/", said)
    data = tmp_path / "host"
    r = CliRunner().invoke(
        cli, ["--data", str(data), "cluster", "join", str(out / f"{CONTROLLER}.tar.gz")]
    )
    assert r.exit_code == 0, r.output
    assert f"roost --data {data} sentinel" in " ".join(r.output.split())


def test_one_servicehost_has_no_pair_and_no_sentinel(tmp_path: Path) -> None:
    out = tmp_path / "bundles"
    said = _init(out, SERVICEHOSTS[:1])
    for host in [SERVICEHOSTS[0], CONTROLLER]:
        assert f"keys/{SENTINEL_KEY}" not in _files(out / f"{host}.tar.gz")
    assert "sentinel" not in said


def test_the_host_is_the_one_sentinel_host_among_its_addresses() -> None:
    assert own_host(["10.0.0.1", "10.0.0.3"], {"127.0.0.1", "10.0.0.3"}) == "10.0.0.3"
    with pytest.raises(ConfigError, match="none of the sentinel hosts"):
        own_host(["10.0.0.1"], {"127.0.0.1"})


async def test_roost_sentinel_runs_a_sentinel_and_stops_it() -> None:
    # Under /tmp: the sentinel runs as the service user, who walks down here.
    data = Path(tempfile.mkdtemp(prefix="roost-sentinel-", dir="/tmp"))
    os.chmod(data, 0o711)
    port = free_port()
    ClusterConfig(endpoints={"controller": [Endpoint(f"tcp://127.0.0.1:{free_port()}", "k")]}).save(
        data / "cluster.json"
    )
    (data / "keys").mkdir(mode=0o700)
    (data / "keys" / SENTINEL_KEY).write_text("pw\n")
    env = {**os.environ, "ROOST_SENTINEL_PORT": str(port)}
    argv = [sys.executable, "-m", "roost", "--data", str(data), "sentinel"]
    log = open(data / "daemon.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        pid = await _answering(("127.0.0.1", port), proc)
        assert psutil.Process(pid).cwd() == str(data / "servicehost" / "sentinel")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        print((data / "daemon.log").read_text(errors="replace")[-3000:])
        subprocess.run(["rm", "-rf", str(data)], check=False)


async def _answering(addr: tuple[str, int], proc: subprocess.Popen[bytes]) -> int:
    """The sentinel's pid once it answers with the cluster's password."""
    async with asyncio.timeout(60):
        while True:
            assert proc.poll() is None, "roost sentinel exited"
            try:
                async with sentinelproc.client(addr, "pw") as r:
                    info = await r.call("INFO", "server")
                    assert "redis_mode:sentinel" in info
                    return int(info.split("process_id:")[1].split()[0])
            except (OSError, RedisError, TimeoutError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.1)
