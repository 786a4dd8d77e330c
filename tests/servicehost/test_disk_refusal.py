"""Below the free-disk threshold the servicehost refuses new services up front."""

from __future__ import annotations

import json

import pytest

from roost.wire.messages import ServiceProvision
from roost.wire.rpc import RemoteError
from tests.servicehost.harness import Servicehost

pytestmark = pytest.mark.e2e


async def test_provisioning_is_refused_when_the_disk_is_too_full() -> None:
    sh = Servicehost(env={"ROOST_MIN_FREE_DISK": "0.9999"})
    sh.start()
    try:
        await sh.wait_postgres_up()
        for kind in ("postgres", "redis"):
            with pytest.raises(RemoteError, match="too full to provision") as err:
                await sh.call(ServiceProvision(app="big", kind=kind))  # type: ignore[arg-type]
            assert "99.99% required" in str(err.value)
        # Nothing was created half-way: no credentials, no database, no server.
        state = json.loads((sh.data / "servicehost" / "state.json").read_text())
        assert state["services"] == {}
        assert not (sh.data / "servicehost" / "redis" / "big").exists()
        status = await sh.status()
        assert [s.app for s in status.servers] == [""]
    finally:
        sh.cleanup()
