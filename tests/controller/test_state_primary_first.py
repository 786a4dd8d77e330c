"""A controller reaches its state database's primary at once when the
first-listed member's host is down without a reset (a power cut, a
partition: packets dropped): its engine's new connections, its wait for
the database at start, the migration's child, the Alembic revision and a
platform snapshot's pg_dump list the members the primary first
(controller/stateorder.py, state/hostorder.py). Before, libpq waited out
connect_timeout (5 s) on the silent member at every new connection, and
what connected without one (the migration, the revision, pg_dump) its TCP
connect retries (about two minutes).

A real PostgreSQL (tests/pgserver.py) stands for the primary, a stand-in
Patroni REST API beside it answers `GET /primary` with 200, and the other
member is a silent address (tests/silenthost.py) on the same ports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, text

from roost import __version__
from roost.controller import stateorder, statewait, upgrade
from roost.controller.astore import AsyncStore
from roost.controller.platformsnap import PlatformFiles, PlatformSnap
from roost.controller.store import Store
from roost.state.db import PG_CONNECT_ARGS, make_engine
from tests.pgserver import postgres_server
from tests.silenthost import patroni_rest, ports, silent_port

DEAD = "127.77.4.4"
CONNECT_TIMEOUT = PG_CONNECT_ARGS["connect_timeout"]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    with postgres_server() as url:
        host, port = url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)
        yield host, int(port)


def multihost(server: tuple[str, int], database: str = "roost") -> str:
    """The controllers' URL (statedb.plan.state_url's form), the silent member first."""
    host, port = server
    return (
        f"postgresql+psycopg://roost@/{database}"
        f"?host={DEAD},{host}&port={port},{port}&target_session_attrs=read-write"
    )


def served_by(engine: Engine) -> tuple[str, float]:
    """(the server address a new connection reached, seconds it took). Blocking."""
    started = time.monotonic()
    with engine.connect() as conn:
        addr = str(conn.execute(text("SELECT host(inet_server_addr())")).scalar())
    return addr, time.monotonic() - started


async def test_the_engine_connects_to_the_primary_at_once(server: tuple[str, int]) -> None:
    host, port = server
    url = multihost(server)
    _, rest = ports()
    with silent_port(DEAD, port), silent_port(DEAD, rest):
        async with patroni_rest(host, rest, 200) as heard:
            old = make_engine(url)  # no order: the URL's, as before
            try:
                old_addr, before = await asyncio.to_thread(served_by, old)
            finally:
                old.dispose()
            engine = stateorder.state_engine(url, rest)
            try:
                addr, after = await asyncio.to_thread(served_by, engine)
                asked = len(heard)

                # A burst of new pool connections: the order found is kept.
                def burst() -> float:
                    started = time.monotonic()
                    conns = [engine.connect() for _ in range(4)]
                    for c in conns:
                        c.execute(text("SELECT 1"))
                        c.close()
                    return time.monotonic() - started

                burst_s = await asyncio.to_thread(burst)
                asked_after_burst = len(heard)
            finally:
                engine.dispose()
    print(f"\nfirst connection behind a silent first member: {before:.2f} s before, "
          f"{after:.2f} s now; 4 more at once {burst_s:.2f} s")  # fmt: skip
    assert old_addr == addr == host
    assert before >= CONNECT_TIMEOUT - 0.1, before
    assert after < 1.0, after
    assert asked == 1 and heard == ["GET /primary HTTP/1.0"]
    assert burst_s < 1.0 and asked_after_burst == 1, (burst_s, heard)


async def test_without_patronis_port_postgresqls_is_probed(server: tuple[str, int]) -> None:
    host, port = server
    with silent_port(DEAD, port):
        engine = stateorder.state_engine(multihost(server), 0)
        try:
            addr, took = await asyncio.to_thread(served_by, engine)
        finally:
            engine.dispose()
    assert addr == host and took < 1.5, took


async def test_a_controller_starts_and_snapshots_behind_a_silent_member(
    server: tuple[str, int], tmp_path: Path
) -> None:
    """The start's steps that connect (wait, revision, migration in a
    child, the store) and a platform snapshot (revision, pg_dump, revision)."""
    host, port = server
    with psycopg.connect(host=host, port=port, user="roost", dbname="postgres",
                         autocommit=True) as c:  # fmt: skip
        c.execute("CREATE DATABASE fresh")
    url = multihost(server, "fresh")
    _, rest = ports()
    took: dict[str, float] = {}
    with silent_port(DEAD, port), silent_port(DEAD, rest):
        async with patroni_rest(host, rest, 200):
            started = time.monotonic()
            stop = asyncio.Event()
            check = lambda u: statewait.probe(u, rest)  # noqa: E731
            assert await asyncio.wait_for(statewait.wait_for_state(url, stop, check), 30)
            took["wait"] = time.monotonic() - started

            started = time.monotonic()
            async with asyncio.timeout(60):  # on the silent member first: minutes
                await upgrade.migrate_after_copy(tmp_path, url, __version__, False, rest)
            took["migrate"] = time.monotonic() - started

            store = AsyncStore(Store(stateorder.state_engine(url, rest)))
            try:
                snap = PlatformSnap(store, PlatformFiles(tmp_path, url, rest))
                started = time.monotonic()
                async with asyncio.timeout(60):
                    got = await snap.snapshot(None)  # type: ignore[arg-type]
                took["snapshot"] = time.monotonic() - started
            finally:
                await store.aclose()
    print(f"\nbehind a silent first member: {took}")
    assert got.schema_version and got.files["state.pgdump"]  # type: ignore[attr-defined]
    assert took["wait"] < 1.5 and took["snapshot"] < 5, took
    assert took["migrate"] < 30, took
