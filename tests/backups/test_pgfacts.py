"""pgfacts: a dump and its facts of one instant, against a real PostgreSQL 15;
restored into a scratch server, the facts match; a changed row shows. A
pair whose first-listed member's host is silent is reached at once, its
primary listed first (tests/silenthost.py's stand-ins)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psycopg
import pytest

from roost.backups.layout import Layout
from roost.backups.pgfacts import (
    DbFacts,
    PgConn,
    TableFacts,
    compare,
    dump_with_facts,
    ordered_source,
    pg_tool,
    run_tool,
    take_facts,
)
from roost.backups.scratch import ScratchPg, scratch_postgres
from roost.wire.messages import PgSource
from tests.backups.pgsource import Source
from tests.silenthost import patroni_rest, ports, silent_port

APP_SCHEMA = """
CREATE TABLE t (id int PRIMARY KEY, v text, at timestamptz, f float8, b bytea, j jsonb);
INSERT INTO t VALUES
  (1, 'one', '2024-01-02 03:04:05.123456+02', 0.1, '\\x00ff', '{"a": [1, 2]}'),
  (2, NULL, NULL, 1e300, NULL, NULL),
  (3, 'tab	and
newline', 'infinity', 'NaN', '', '[]');
CREATE TABLE empty (x int);
CREATE SCHEMA "Other";
CREATE TABLE "Other"."Mixed Case" (k text);
INSERT INTO "Other"."Mixed Case" SELECT 'k' || g FROM generate_series(1, 500) g;
CREATE TABLE parent (id int);
CREATE TABLE child (extra text) INHERITS (parent);
INSERT INTO parent VALUES (1), (2);
INSERT INTO child VALUES (3, 'c');
CREATE TABLE part (id int, region text) PARTITION BY LIST (region);
CREATE TABLE part_eu PARTITION OF part FOR VALUES IN ('eu');
CREATE TABLE part_us PARTITION OF part FOR VALUES IN ('us');
INSERT INTO part VALUES (1, 'eu'), (2, 'us'), (3, 'us');
CREATE TABLE gone (x int);
ALTER TABLE gone ADD COLUMN y int;
INSERT INTO gone VALUES (1, 2);
ALTER TABLE gone DROP COLUMN x;
CREATE TABLE secret (x int);
INSERT INTO secret VALUES (1), (2);
ALTER TABLE secret ENABLE ROW LEVEL SECURITY;  -- no policy: hidden from all but its owner
"""


@pytest.fixture
def source(pg_server: Source) -> Iterator[Source]:
    """The package's server with this test's own `app` (dropped after it)."""
    pg_server.sql("CREATE DATABASE app")
    pg_server.sql(APP_SCHEMA, "app")
    yield pg_server
    pg_server.sql("DROP DATABASE app WITH (FORCE)")


async def restore(scratch: ScratchPg, dump: Path, dbname: str) -> None:
    async with await scratch.connect() as c:
        await c.execute(f'CREATE DATABASE "{dbname}"')
    argv = [pg_tool("pg_restore"), "--no-owner", "--no-acl", "--exit-on-error",
            "-d", dbname, str(dump)]  # fmt: skip
    status, out = await run_tool(argv, env=scratch.conn.env(dbname), timeout=120)
    assert status == 0, out


async def test_dump_and_facts_round_trip(source: Source, layout: Layout, tmp_path: Path) -> None:
    dump = tmp_path / "app.dump"
    facts = await dump_with_facts(source.pg, "app", dump)
    assert dump.stat().st_size > 0
    rows = {name: f.rows for name, f in facts.tables.items()}
    assert rows == {
        "public.t": 3,
        "public.empty": 0,
        '"Other"."Mixed Case"': 500,
        "public.parent": 2,  # its own rows only: the child is a table too
        "public.child": 1,
        "public.part_eu": 1,  # leaf partitions; the parent holds no rows
        "public.part_us": 2,
        "public.gone": 1,
        "public.secret": 2,  # the backup role bypasses row-level security
    }
    assert facts.database == "app" and facts.taken_at > 0
    # JSON both ways.
    assert DbFacts.from_json(facts.to_json()) == facts

    async with scratch_postgres(layout) as scratch:
        await restore(scratch, dump, "restored")
        got = await take_facts(scratch.conn, "restored")
    assert compare(facts, got) == []


async def test_a_changed_row_is_reported(source: Source, layout: Layout, tmp_path: Path) -> None:
    dump = tmp_path / "app.dump"
    facts = await dump_with_facts(source.pg, "app", dump)
    async with scratch_postgres(layout) as scratch:
        await restore(scratch, dump, "restored")
        async with await scratch.connect("restored") as c:
            await c.execute("UPDATE t SET v = 'ONE' WHERE id = 1")
            await c.execute('DELETE FROM "Other"."Mixed Case" WHERE k = \'k7\'')
            await c.execute("DROP TABLE empty")
        got = await take_facts(scratch.conn, "restored")
    assert compare(facts, got) == [
        "1 tables missing: public.empty",
        '"Other"."Mixed Case": 499 rows, 500 when taken',
        "public.t: the rows' contents differ (same 3 rows)",
    ]


async def test_facts_and_dump_are_of_one_instant(source: Source, tmp_path: Path,
                                                 layout: Layout) -> None:  # fmt: skip
    """A row committed after the snapshot is in neither the facts nor the dump,
    though it committed before either of them read that table."""
    blocker = source.admin("app")
    blocker.execute("BEGIN")
    blocker.execute("LOCK TABLE public.t IN ACCESS EXCLUSIVE MODE")
    dump = tmp_path / "app.dump"
    task = asyncio.create_task(dump_with_facts(source.pg, "app", dump))
    try:
        # Wait until backupd's transaction (its snapshot taken) waits for the lock.
        for _ in range(300):
            waiting = source.sql(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE NOT l.granted AND a.application_name = 'roost-backupd'",
                "app",
            )
            if waiting[0][0]:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("backupd never waited for the lock")
        source.sql('INSERT INTO "Other"."Mixed Case" VALUES (\'late\')', "app")
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    facts = await task
    assert facts.tables['"Other"."Mixed Case"'].rows == 500
    async with scratch_postgres(layout) as scratch:
        await restore(scratch, dump, "restored")
        got = await take_facts(scratch.conn, "restored")
    assert compare(facts, got) == []


def test_compare_is_pure_and_says_what_differs() -> None:
    a = DbFacts(
        database="d", tables={"public.a": TableFacts(2, "x"), "public.b": TableFacts(1, "y")}
    )
    assert compare(a, a) == []
    b = DbFacts(
        database="d", tables={"public.a": TableFacts(3, "z"), "public.c": TableFacts(0, "")}
    )
    assert compare(a, b) == [
        "1 tables missing: public.b",
        "1 tables not in the backup: public.c",
        "public.a: 3 rows, 2 when taken",
    ]
    many = DbFacts(database="d", tables={f"public.t{i}": TableFacts(0, "") for i in range(8)})
    assert compare(many, DbFacts(database="d")) == [
        "8 tables missing: public.t0, public.t1, public.t2, public.t3, public.t4 and 3 more"
    ]


async def test_rows_hidden_by_row_level_security_are_an_error_not_a_short_count(
    source: Source, tmp_path: Path
) -> None:
    source.sql("CREATE ROLE weak LOGIN; GRANT pg_read_all_data TO weak")
    try:
        weak = PgConn(source.host, source.port, "weak")  # no BYPASSRLS
        with pytest.raises(psycopg.Error, match="row-level security"):
            await take_facts(weak, "app")
        with pytest.raises(psycopg.Error, match="row-level security"):
            await dump_with_facts(weak, "app", tmp_path / "app.dump")
    finally:  # a role is the server's, not the database's: gone for the next test
        source.sql("DROP ROLE weak")


async def test_a_pair_member_down_without_a_reset_costs_no_connect_timeout(
    source: Source, tmp_path: Path
) -> None:
    """A pair whose first-listed member's host is down without a reset (a
    power cut: packets dropped). libpq tries the hosts in order and waited
    out its connect_timeout (10 s) on that one at every connection; the
    members are asked first (Patroni's `GET /primary`), the primary listed
    first, so the dump, pg_dump's own connection and the facts go straight
    to it."""
    dead = "127.77.1.4"
    _, rest = ports()
    pair = msgspec.structs.replace(
        source.pg, host=f"{dead},{source.host}", pair="p1", rest_port=rest
    )
    with silent_port(dead, source.port), silent_port(dead, rest):
        async with patroni_rest(source.host, rest, 200):
            started = time.monotonic()
            facts = await dump_with_facts(pair, "app", tmp_path / "app.dump")
            dumped = time.monotonic() - started
            started = time.monotonic()
            got = await take_facts(pair, "app")
            taken = time.monotonic() - started
    assert compare(facts, got) == []
    assert dumped < 5 and taken < 3, (dumped, taken)


async def test_a_pair_source_for_pg_receivewal_names_the_primary_first() -> None:
    """pg_receivewal's conninfo is built from the source at each start
    (walreceiver.receive_argv): started again after a failover, it is given
    the new primary first, not the dead member it was given before."""
    dead, primary = "127.77.1.5", "127.77.1.6"
    pg, rest = ports()
    src = PgSource(host=f"{dead},{primary}", port=pg, user="u", password="p", pair="p1",
                   rest_port=rest)  # fmt: skip
    with silent_port(dead, pg), silent_port(dead, rest):
        async with patroni_rest(primary, rest, 200):
            assert (await ordered_source(src)).host == f"{primary},{dead}"
    # A servicehost's own PostgreSQL (no pair) is left as it is, unprobed.
    own = PgSource(host=dead, port=pg, user="u", password="p")
    assert await ordered_source(own) is own
