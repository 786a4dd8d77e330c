"""ServiceHostRestore against a real, fresh servicehost: it takes on a lost
one's services with their credentials (PostgreSQL moved onto the recorded
port), a repeat answers as the first did, and a port another program holds
or a second restore is refused with nothing changed."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import msgspec
import pytest

from roost.servicehost.names import new_password
from roost.servicehost.state import HostState, PgCluster, Service
from roost.wire.messages import ServiceCredentials, ServiceHostRestore, ServiceHostRestored
from roost.wire.rpc import RemoteError
from tests.conftest import free_port
from tests.servicehost.backupkit import as_app, redis_cli, sources
from tests.servicehost.harness import Servicehost

pytestmark = pytest.mark.e2e


@pytest.fixture
def sh() -> Iterator[Servicehost]:
    yield from Servicehost(backupd=True).running()


def lost_state() -> HostState:
    """A servicehost's record of an app's database and Redis, on ports of its own."""
    pg_port, redis_port = free_port(), free_port()
    return HostState(
        postgres=PgCluster(port=pg_port, password=new_password(), backup_password=new_password()),
        services={
            "postgres/adp": Service(
                app="adp", kind="postgres", port=pg_port, database="app_adp",
                username="app_adp", password=new_password(),
            ),
            "redis/adp": Service(
                app="adp", kind="redis", port=redis_port, password=new_password(),
                memory_mb=32, admin_password=new_password(), backup_password=new_password(),
            ),
        },
    )  # fmt: skip


def state_of(sh: Servicehost) -> bytes:
    return (sh.data / "servicehost" / "state.json").read_bytes()


async def test_a_fresh_servicehost_takes_on_a_lost_ones_services(sh: Servicehost) -> None:
    old = lost_state()
    raw = msgspec.json.encode(old)
    db, red = old.services["postgres/adp"], old.services["redis/adp"]
    assert old.postgres is not None

    # A port the apps' credentials name, held by another program: refused.
    before = state_of(sh)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", red.port))
        squatter.listen()
        with pytest.raises(RemoteError, match=f"port\\(s\\) {red.port}, which the apps'"):
            await sh.as_backupd(ServiceHostRestore(state_json=raw, restore_id="a1"))
    assert state_of(sh) == before

    done = await sh.as_backupd(ServiceHostRestore(state_json=raw, restore_id="a1"))
    assert done == ServiceHostRestored(postgres=["adp"], redis=["adp"])
    # The lost host's credentials work here: PostgreSQL on its recorded port.
    creds = ServiceCredentials(
        app="adp", kind="postgres", host="127.0.0.1", port=old.postgres.port,
        database="app_adp", username="app_adp", password=db.password, url="",
    )  # fmt: skip
    with as_app(creds) as conn:
        conn.execute("CREATE TABLE t (n int)")
    pong = redis_cli("127.0.0.1", red.port, "default", red.password, "PING")
    assert pong.stdout.strip() == "PONG", pong.stderr
    src = await sources(sh)
    assert src.postgres is not None and src.postgres.password == old.postgres.backup_password
    assert src.postgres.port == old.postgres.port
    mine = json.loads(state_of(sh))
    assert mine["adopted"] == "a1" and mine["postgres"]["password"] != old.postgres.password

    # A repeat (after a timeout, say) answers as the first; another restore is refused.
    assert await sh.as_backupd(ServiceHostRestore(state_json=raw, restore_id="a1")) == done
    after = state_of(sh)
    with pytest.raises(RemoteError, match="holds services already \\(adp \\(postgres\\), adp"):
        await sh.as_backupd(ServiceHostRestore(state_json=raw, restore_id="a2"))
    assert state_of(sh) == after
    with as_app(creds) as conn:  # what the app wrote meanwhile is still there
        assert conn.execute("SELECT to_regclass('t') IS NOT NULL").fetchone() == (True,)
