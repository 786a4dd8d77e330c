"""PairAdmin (servicehost/pairdb.py) reaches the pair's primary at once when
the first-listed member's host is down without a reset (a power cut, a
partition: packets dropped): its members are asked first (Patroni's `GET
/primary`, roost.patroni.order_members) and the primary listed first, for
its connections and for pg_dump's. Before, libpq waited out the connect
timeout on the silent member at every connection (5 s), and pg_dump, given
none, its TCP connect retries (about two minutes).

A real PostgreSQL (tests/pgserver.py) stands for the primary, a stand-in
Patroni REST API beside it answers 200, and the other member is a silent
address (tests/silenthost.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psycopg
import pytest

from roost.servicehost import pgadmin
from roost.servicehost.binaries import Binaries
from roost.servicehost.pairdb import PairAdmin
from roost.servicehost.pgpair import PairPlan, new_pair
from tests.pgserver import pg_bin, postgres_server
from tests.silenthost import patroni_rest, ports, silent_port

DEAD = "127.77.2.4"


@pytest.fixture(scope="module")
def primary() -> Iterator[tuple[str, int]]:
    """A PostgreSQL with the superuser PairAdmin logs in as (trust)."""
    with postgres_server() as url:
        host, port = url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)
        with psycopg.connect(host=host, port=int(port), user="roost", dbname="postgres",
                             autocommit=True) as c:  # fmt: skip
            c.execute("CREATE ROLE postgres SUPERUSER LOGIN")
        yield host, int(port)


def plan_for(primary: tuple[str, int], rest_port: int) -> PairPlan:
    host, port = primary
    plan = new_pair("p1", [DEAD, host], ["10.9.0.1", "10.9.0.2", "10.9.0.3"])
    return msgspec.structs.replace(plan, pg_port=port, rest_port=rest_port)


async def test_a_silent_first_member_is_tried_last(primary: tuple[str, int],
                                                   tmp_path: Path) -> None:  # fmt: skip
    host, port = primary
    _, rest = ports()
    bins = Binaries(Path(pg_bin("pg_dump")).parent, Path("/nonexistent"))
    admin = PairAdmin(plan_for(primary, rest), bins)
    with silent_port(DEAD, port), silent_port(DEAD, rest):
        async with patroni_rest(host, rest, 200):
            env = await admin.tool_env()
            assert env["PGHOST"] == f"{host},{DEAD}" and env["PGPORT"] == f"{port},{port}"
            assert env["PGCONNECT_TIMEOUT"] == "5"
            started = time.monotonic()
            async with await admin.connect() as conn:
                row = await (await conn.execute("SELECT host(inet_server_addr())")).fetchone()
            connected = time.monotonic() - started
            started = time.monotonic()
            async with asyncio.timeout(30):  # pg_dump on the silent member first: minutes
                size = await pgadmin.dump(admin, "roost", tmp_path / "roost.dump")
            dumped = time.monotonic() - started
    assert row == (host,) and size > 0
    assert connected < 2 and dumped < 3, (connected, dumped)
