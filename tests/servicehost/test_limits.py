"""Each app's share of the servicehost: a PostgreSQL role's CONNECTION LIMIT,
a Redis server's maxmemory and eviction policy, both applied to services that
existed before (at the servicehost's start), and reported in its status; and
the servicehost's own files, private to it.

One servicehost (started as `roost servicehost`, with a small connection
limit) serves the module; the restart test runs last in it.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Iterator

import psycopg
import pytest

from roost.wire.messages import ServerStatus, ServiceCredentials
from tests.conftest import wait_until
from tests.nobody import nobody_reads, readable_control
from tests.servicehost.backupkit import as_app as pg_connect
from tests.servicehost.backupkit import provision as creds
from tests.servicehost.backupkit import superuser
from tests.servicehost.harness import Servicehost, redis_for

pytestmark = pytest.mark.e2e

LIMIT = 3
DEFAULT_REDIS_MB = 16  # Settings.redis_memory_mb


@pytest.fixture(scope="module")
def sh() -> Iterator[Servicehost]:
    host = Servicehost(env={"ROOST_POSTGRES_CONNECTION_LIMIT": str(LIMIT)})
    # An app data directory and a cluster.json as an older version left them.
    older = host.data / "servicehost" / "appdata" / "older-app"
    older.mkdir(parents=True)
    os.chmod(older, 0o755)
    os.chmod(host.data / "cluster.json", 0o644)
    yield from host.running()


def connections(c: ServiceCredentials, n: int) -> list[psycopg.Connection]:
    """Open `n` sessions as the app; the caller closes them."""
    opened: list[psycopg.Connection] = []
    try:
        for _ in range(n):
            opened.append(pg_connect(c))
    except BaseException:
        for conn in opened:
            conn.close()
        raise
    return opened


def role_limit(sh: Servicehost, role: str) -> int:
    with superuser(sh) as su:
        row = su.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    assert row is not None
    return int(row[0])


def assert_limited(c: ServiceCredentials) -> None:
    """LIMIT sessions open; one more is refused by PostgreSQL for this role."""
    held = connections(c, LIMIT)
    try:
        with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
            pg_connect(c).close()
    finally:
        for conn in held:
            conn.close()


async def reported(sh: Servicehost, app: str, kind: str) -> ServerStatus:
    st = await sh.status()
    return next(s for s in st.servers if s.app == app and s.kind == kind)


async def test_an_app_cannot_hold_more_connections_than_its_limit(sh: Servicehost) -> None:
    c = await creds(sh, "lim-a", "postgres")
    assert_limited(c)
    assert role_limit(sh, c.username) == LIMIT
    # Its neighbour is not starved by it: the limit is per role.
    other = await creds(sh, "lim-b", "postgres")
    held = connections(c, LIMIT)
    try:
        pg_connect(other).close()
    finally:
        for conn in held:
            conn.close()


async def test_the_status_reports_limits_and_use(sh: Servicehost) -> None:
    c = await creds(sh, "lim-st", "postgres")
    r = await creds(sh, "lim-st", "redis")
    held = connections(c, 2)
    try:
        row = await reported(sh, "lim-st", "postgres")
        assert (row.connection_limit, row.connections) == (LIMIT, 2)
    finally:
        for conn in held:
            conn.close()
    client = redis_for(r)
    client.set("k", "v" * 10_000)
    row = await reported(sh, "lim-st", "redis")
    assert row.memory_limit_bytes == DEFAULT_REDIS_MB << 20
    assert 10_000 < row.memory_used_bytes < row.memory_limit_bytes
    assert row.eviction_policy == "volatile-lru"
    client.close()


async def test_the_servicehosts_files_are_private(sh: Servicehost) -> None:
    await creds(sh, "lim-files", "redis")
    data = sh.data
    root = data / "servicehost"
    appdata = root / "appdata"
    private = [
        data / "cluster.json",
        data / "keys",
        root / "state.json",
        root / "postgres",
        root / "redis" / "lim-files",
        root / "redis" / "lim-files" / "redis.conf",
        root / "backups",
        root / "logs",
        appdata / "older-app",
    ]
    control = readable_control(data)
    got = nobody_reads([control, *private])
    assert got.pop(control) == "read"
    readable = sorted(str(p) for p, r in got.items() if r != "PermissionError")
    assert not readable, f"nobody could read: {readable}"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in private}
    assert modes["cluster.json"] == modes["state.json"] == modes["redis.conf"] == 0o600
    assert modes["keys"] == modes["older-app"] == 0o700


async def test_services_made_before_the_limits_get_them_at_start(sh: Servicehost) -> None:
    """Last in the module: it restarts the servicehost."""
    c = await creds(sh, "lim-old", "postgres")
    r = await creds(sh, "lim-old", "redis")
    # As an older servicehost left them: a role without a connection limit, a
    # Redis recorded without a memory limit of its own.
    with superuser(sh) as su:
        su.execute(f'ALTER ROLE "{c.username}" CONNECTION LIMIT -1')
    held = connections(c, LIMIT + 1)  # possible then
    for conn in held:
        conn.close()
    sh.stop()
    state_file = sh.data / "servicehost" / "state.json"
    state = json.loads(state_file.read_text())
    state["services"]["redis/lim-old"]["memory_mb"] = 0
    state_file.write_text(json.dumps(state))
    sh.start()
    await sh.wait_postgres_up()
    wait_until(lambda: role_limit(sh, c.username) == LIMIT, 60, "the limit on the older role")
    assert_limited(c)

    async def redis_up() -> ServerStatus:
        for _ in range(300):
            row = await reported(sh, "lim-old", "redis")
            if row.state == "up":
                return row
            await asyncio.sleep(0.1)
        raise AssertionError(f"Redis of lim-old not up: {row}\n{sh.tail()}")

    await redis_up()
    client = redis_for(r)
    assert client.config_get("maxmemory") == {"maxmemory": str(DEFAULT_REDIS_MB << 20)}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lru"}
    client.close()
