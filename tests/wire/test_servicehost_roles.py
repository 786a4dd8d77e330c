"""A real servicehost daemon refuses a runner's key what only a controller may ask.

A runner runs tenants' code; before per-role keys, the key it held was the
cluster's and dropped any app's database. Here the servicehost runs as a
subprocess (`roost.servicehost.daemon.run`, real PostgreSQL and Redis), a Redis
is provisioned with the controller's key, and the runner's key asks for it
to be dropped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from roost.wire.messages import (
    ServiceBackup,
    ServiceCredentials,
    ServiceDeprovision,
    ServiceProvision,
)
from roost.wire.rpc import RemoteError
from tests.servicehost.harness import Servicehost


@pytest.fixture
def sh() -> Iterator[Servicehost]:
    host = Servicehost()
    host.member("runner")  # a member of the cluster before the daemon reads peers.json
    yield from host.running()


async def test_a_runner_key_cannot_drop_or_back_up_an_apps_service(sh: Servicehost) -> None:
    made = await sh.call(ServiceProvision(app="victim", kind="redis"))
    assert isinstance(made, ServiceCredentials)
    runner = sh.member("runner")
    async with sh.client(runner) as as_runner:
        for msg in (
            ServiceDeprovision(app="victim", kind="redis"),
            ServiceBackup(app="victim", kind="redis"),
            ServiceProvision(app="intruder", kind="redis"),
        ):
            with pytest.raises(RemoteError, match=r"a runner \(runner:local\) may not send"):
                await as_runner.call(msg, timeout=30, tries=1)
    # Nothing happened: no final backup was taken, the server still runs
    # with the same credentials, and no service was made for the intruder.
    assert not list((sh.data / "servicehost" / "backups").rglob("*.rdb"))
    st = await sh.status()
    assert {(s.app, s.kind) for s in st.servers if s.app} == {("victim", "redis")}
    r = redis.Redis.from_url(made.url, socket_timeout=5)
    try:
        assert r.ping()
    finally:
        r.close()
    again = await sh.call(ServiceProvision(app="victim", kind="redis"))
    assert again == made
    assert "refused: a runner" in sh.tail(200)
