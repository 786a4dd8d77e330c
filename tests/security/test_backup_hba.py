"""The backup role logs in only from where backupd runs.

Hosts are network namespaces: a servicehost (its own address), a runner's
host (where tenants' code runs) and the backup host (the root namespace's
address on the bridge, listed as "backupd" in the address book). An app
that learned the backup role's password still cannot log in with it from
the runner's host, for replication or to any database, while its own role
reaches its database from there, and backupd logs in from its host.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from roost.servicehost.binaries import find_binaries
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.identity import ensure_member, identity
from roost.wire.keys import KeyPair
from roost.wire.messages import (
    BackupSource,
    BackupSourceRequest,
    Msg,
    ServiceCredentials,
    ServiceHostStatus,
    ServiceHostStatusRequest,
    ServiceProvision,
)
from roost.wire.node import Node
from roost.wire.rpc import RpcClient
from tests.cluster.harness import Host, Network

pytestmark = pytest.mark.e2e


@pytest.fixture
def net() -> Iterator[Network]:
    # Under /tmp, searchable: the servers run as the service user.
    base = Path(tempfile.mkdtemp(prefix="roost-hba-", dir="/tmp"))
    base.chmod(0o755)
    network = Network(base)
    try:
        network.create()
        yield network
    finally:
        network.close()
        shutil.rmtree(base, ignore_errors=True)
    assert not network.leftovers(), f"left behind: {network.leftovers()}"


async def _call(keys: KeyPair, ep: Endpoint, msg: Msg, timeout: float = 60) -> Msg:
    async with Node(keys, []) as node:
        client = RpcClient(node, [ep])
        try:
            return await client.call(msg, timeout=timeout, tries=1)
        finally:
            await client.close()


async def _wait_up(keys: KeyPair, ep: Endpoint, svc: Host, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in svc.procs), log.read_text()[-3000:]
        try:
            st = await _call(keys, ep, ServiceHostStatusRequest(), timeout=5)
        except Exception:
            st = None
        # Serving: its PostgreSQL starts with the first database (pgdemand.py).
        if isinstance(st, ServiceHostStatus):
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"the servicehost did not come up:\n{log.read_text()[-3000:]}")


def _psql(net: Network, host: Host, conninfo: str) -> tuple[int, str]:
    r = net.run_in(
        host, [find_binaries().pg("psql"), "-X", "-At", "-d", conninfo, "-c", "SELECT 1"]
    )
    return r.returncode, r.stdout + r.stderr


async def test_an_app_cannot_log_in_as_the_backup_role_from_a_runners_host(net: Network) -> None:
    svc, runner = net.add_host("svc", 41), net.add_host("run", 21)
    data = svc.data
    data.mkdir(parents=True)
    data.chmod(0o711)
    keys = data / "keys"
    server = ensure_member(keys, "servicehost", identity("servicehost", svc.ip))
    backupd = ensure_member(keys, "backupd", identity("backupd", net.gateway))
    controller = ensure_member(keys, "controller", identity("controller", net.gateway))
    ep = Endpoint(f"tcp://{svc.ip}:7120", server.public_text)
    ClusterConfig(
        endpoints={
            "servicehost": [ep],
            "backupd": [Endpoint(f"tcp://{net.gateway}:7130", backupd.public_text)],
        }
    ).save(data / "cluster.json")
    log = svc.data.parent / "servicehost.log"
    net.spawn(
        svc, [sys.executable, "-m", "roost", "--data", str(data), "servicehost"],
        {**os.environ, "ROOST_LOG_LEVEL": "INFO"}, log,
    )  # fmt: skip
    try:
        await _wait_up(controller, ep, svc, log)
        app = await _call(controller, ep, ServiceProvision(app="shop", kind="postgres"))
        assert isinstance(app, ServiceCredentials) and app.host == svc.ip
        src = await _call(backupd, ep, BackupSourceRequest())
        assert isinstance(src, BackupSource) and src.postgres is not None
        pg = src.postgres
        assert pg.host == svc.ip

        # backupd, from its host: in, to a database and for replication.
        with psycopg.connect(
            host=pg.host, port=pg.port, user=pg.user, password=pg.password,
            dbname=app.database, connect_timeout=5,
        ) as conn:  # fmt: skip
            assert conn.execute("SELECT current_user").fetchone() == ("roost_backup",)
        base = f"host={pg.host} port={pg.port} user={pg.user} password={pg.password}"
        status, out = await asyncio.to_thread(_psql, net, runner, f"{base} dbname={app.database}")
        assert status != 0 and "pg_hba.conf rejects connection" in out, out
        for dbname in ("postgres", "template1", "roost_backup"):
            status, out = await asyncio.to_thread(_psql, net, runner, f"{base} dbname={dbname}")
            assert status != 0 and "pg_hba.conf rejects connection" in out, out
        status, out = await asyncio.to_thread(
            _psql, net, runner, f"{base} dbname=postgres replication=database"
        )
        assert status != 0 and "rejects" in out, out
        # The same path serves the app's own role: only the backup role is shut out.
        own = f"host={app.host} port={app.port} user={app.username} password={app.password}"
        status, out = await asyncio.to_thread(_psql, net, runner, f"{own} dbname={app.database}")
        assert status == 0 and out.strip() == "1", out
    finally:
        net.stop_host(svc)
