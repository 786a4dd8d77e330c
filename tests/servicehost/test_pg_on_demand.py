"""A real servicehost whose PostgreSQL starts on demand (pgdemand.py): none
at the start with no database, started by the first provision, adopted over
a hand-over, started with the daemon once backupd streams it; a postmaster
an earlier daemon left running is adopted, not orphaned."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import psutil
import pytest

from roost.wire.messages import ServiceBackup, ServiceDeprovision, ServiceRemoved
from roost.wire.rpc import RemoteError
from tests.servicehost.backupkit import as_app, provision, sources
from tests.servicehost.harness import Servicehost

pytestmark = pytest.mark.e2e

ON_DEMAND = {"ROOST_POSTGRES_START": "on-demand"}


async def _serving(sh: Servicehost, timeout: float = 60.0) -> None:
    """Until the daemon answers its status (it serves once started)."""
    deadline = time.monotonic() + timeout
    while True:
        assert sh.proc is not None and sh.proc.poll() is None, sh.tail()
        try:
            await sh.status()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _postmasters(sh: Servicehost) -> list[int]:
    return [p for p in sh.servers() if psutil.Process(p).name() == "postgres"]


def _state(sh: Servicehost) -> dict[str, object]:
    return json.loads((sh.data / "servicehost" / "state.json").read_text())  # type: ignore[no-any-return]


async def test_postgres_starts_with_the_first_database_and_stays() -> None:
    sh = Servicehost(env=ON_DEMAND, backupd=True)
    sh.start()
    try:
        await _serving(sh)
        # initdb ran (disk only); no server, nothing in the status, and
        # backupd is told of no cluster to stream.
        assert (sh.data / "servicehost" / "postgres" / "PG_VERSION").exists()
        assert _postmasters(sh) == []
        assert not [s for s in (await sh.status()).servers if s.kind == "postgres"]
        assert (await sources(sh)).postgres is None
        # Nothing to remove or back up: answered without starting it.
        gone = await sh.call(ServiceDeprovision(app="ghost", kind="postgres"))
        assert isinstance(gone, ServiceRemoved) and gone.backup_path == ""
        with pytest.raises(RemoteError, match="has no postgres service here"):
            await sh.call(ServiceBackup(app="ghost", kind="postgres"))
        assert _postmasters(sh) == []

        c = await provision(sh, "shop", "postgres")
        with as_app(c) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("app_shop",)
        pid = await sh.wait_postgres_up()
        src = await sources(sh)
        assert src.postgres is not None and src.postgres.databases == {"shop": c.database}

        # A hand-over: the next daemon adopts the running server.
        assert sh.end(signal.SIGUSR2) == 0
        assert psutil.pid_exists(pid)
        sh.start()
        assert await sh.wait_postgres_up() == pid

        # The last database removed: the server stays (backupd streams it),
        # and starts with the daemon after a full stop.
        removed = await sh.call(ServiceDeprovision(app="shop", kind="postgres"))
        assert isinstance(removed, ServiceRemoved) and removed.backup_path
        postgres = _state(sh)["postgres"]
        assert isinstance(postgres, dict) and postgres["backup_password"]
        sh.stop()
        assert _postmasters(sh) == []
        sh.start()
        assert await sh.wait_postgres_up() not in (0, pid)
    except BaseException:
        print(sh.tail())
        raise
    finally:
        sh.cleanup()


async def test_a_postmaster_left_running_is_adopted_not_orphaned() -> None:
    """An earlier daemon (ROOST_POSTGRES_START=always, as an older Roost did)
    hands over a server with no database: the on-demand daemon adopts it and
    its full stop stops it."""
    sh = Servicehost(env={"ROOST_POSTGRES_START": "always"})
    sh.start()
    try:
        pid = await sh.wait_postgres_up()
        assert sh.end(signal.SIGUSR2) == 0
        sh.env.update(ON_DEMAND)
        sh.start()
        assert await sh.wait_postgres_up() == pid
        sh.stop()  # (fails should any server outlive the daemon)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    except BaseException:
        print(sh.tail())
        raise
    finally:
        sh.cleanup()
