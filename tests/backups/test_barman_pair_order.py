"""Barman's own commands reach a pair's primary first when the first-listed
member's host is down without a reset (a power cut, a partition: packets
dropped). barman.conf's conninfo lists both members; libpq tries them in
that order and waited out `tcp_user_timeout` (10 s) on the silent one at
each of Barman's connections (`receive-wal --create-slot`, `switch-wal`,
each `check` of `streaming`'s loop, `backup`'s queries and pg_basebackup).
Before such a command the members are ordered (`pgfacts.ordered_source`)
and barman.conf written with the primary first.

A real PostgreSQL (tests/backups/pgsource.py) stands for the primary, a
stand-in Patroni REST API beside it answers 200, and the other member is
a silent address (tests/silenthost.py). The decisions (which order
barman.conf lists, which orders an `ensure` keeps, two servers ordered at
once) are tested first, without sockets."""

from __future__ import annotations

import asyncio
import configparser
import time
from pathlib import Path

import msgspec
import pytest

from roost.backups import barman as barman_module
from roost.backups.barman import Barman, ServerConfig
from roost.backups.barmanconf import kept_orders, ordered_servers
from roost.backups.layout import Layout
from roost.wire.messages import PgSource
from tests.backups.pgsource import Source
from tests.conftest import processes_under
from tests.silenthost import patroni_rest, ports, silent_port

DEAD = "127.77.3.4"


def pair(name: str, host: str = "10.0.0.5,10.0.0.6", retired: bool = False) -> ServerConfig:
    src = PgSource(host=host, port=5432, user="u", password="p", pair="p1", rest_port=8008)
    return ServerConfig(name, src, retired=retired)


# ------------------------------------------------------------------ pure


def test_barman_conf_lists_a_pair_as_last_found_while_its_members_stand() -> None:
    own = ServerConfig("own", PgSource(host="10.0.0.7", port=5432, user="u", password="p"))
    a, b = pair("a"), pair("b")
    orders = {"a": "10.0.0.6,10.0.0.5", "b": "10.0.0.6,10.0.0.9", "own": "10.0.0.8"}
    out = ordered_servers([a, b, own], orders)
    assert [s.source.host for s in out] == ["10.0.0.6,10.0.0.5", "10.0.0.5,10.0.0.6", "10.0.0.7"]
    assert out[0] == ServerConfig("a", msgspec.structs.replace(a.source, host="10.0.0.6,10.0.0.5"))
    assert out[1:] == [b, own]  # other members, not a pair: as given
    assert ordered_servers([a], {}) == [a]
    # Kept: of a pair still there with the same members, in any order.
    kept = kept_orders(orders, [pair("a", "10.0.0.6,10.0.0.5"), b, own])
    assert kept == {"a": "10.0.0.6,10.0.0.5"}
    assert kept_orders(orders, [pair("a", "10.0.0.5,10.0.0.7")]) == {}  # a member replaced
    assert kept_orders(orders, []) == {}  # the server gone


def conf_hosts(path: Path) -> dict[str, str]:
    cp = configparser.ConfigParser()
    cp.read(path)
    out = {}
    for name in cp.sections():
        if name != "barman":
            [host] = [p for p in cp[name]["conninfo"].split() if p.startswith("host=")]
            out[name] = host.removeprefix("host=")
    return out


async def test_the_order_is_barmans_state_kept_by_ensure_and_by_concurrent_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers ordered at once both stay ordered (barman.conf rendered
    whole from one state); `ensure` keeps a pair's order while its members
    stand and drops it when they change; an order barman.conf already lists
    is not written again. No sockets: the probe is a stand-in."""
    probing = asyncio.Event()
    asked: list[str] = []
    found = {"10.0.0.5,10.0.0.6": "10.0.0.6,10.0.0.5", "10.0.0.1,10.0.0.2": "10.0.0.2,10.0.0.1"}

    async def ordered_source(source: PgSource) -> PgSource:
        asked.append(source.host)
        await probing.wait()
        return msgspec.structs.replace(source, host=found.get(source.host, source.host))

    monkeypatch.setattr(barman_module, "ordered_source", ordered_source)
    b = Barman(Layout(tmp_path))
    conf = b.config_file
    # Retired: ensure runs no Barman command for them (nothing streams).
    a, c = pair("a", retired=True), pair("c", "10.0.0.1,10.0.0.2", retired=True)
    await b.ensure([a, c])
    assert conf_hosts(conf) == {"a": "10.0.0.5,10.0.0.6", "c": "10.0.0.1,10.0.0.2"}
    both = asyncio.gather(b._primary_first("a"), b._primary_first("c"))
    while len(asked) < 2:
        await asyncio.sleep(0)
    probing.set()
    await both
    assert conf_hosts(conf) == {"a": "10.0.0.6,10.0.0.5", "c": "10.0.0.2,10.0.0.1"}
    assert b.servers == {"a": a, "c": c}  # the servers as given stand
    await b.ensure([a, c])
    assert conf_hosts(conf) == {"a": "10.0.0.6,10.0.0.5", "c": "10.0.0.2,10.0.0.1"}
    # a's member 10.0.0.5 replaced: its order is dropped, c's kept.
    a2 = pair("a", "10.0.0.7,10.0.0.6", retired=True)
    await b.ensure([a2, c])
    assert conf_hosts(conf) == {"a": "10.0.0.7,10.0.0.6", "c": "10.0.0.2,10.0.0.1"}
    assert b._orders == {"c": "10.0.0.2,10.0.0.1"}
    # Found as barman.conf lists it already: not written again.
    inode = conf.stat().st_ino
    await b._primary_first("a")
    await b._primary_first("c")
    assert conf.stat().st_ino == inode
    # A servicehost's own PostgreSQL is not probed.
    own = ServerConfig("own", PgSource(host="10.0.0.9", port=5432, user="u", password="p"),
                       retired=True)  # fmt: skip
    await b.ensure([own])
    del asked[:]
    await b._primary_first("own")
    assert asked == []


# ------------------------------------------------------------------ real Barman, real PostgreSQL


async def test_barman_reaches_the_primary_behind_a_silent_first_member(
    source: Source, layout: Layout
) -> None:
    _, rest = ports()
    members = msgspec.structs.replace(
        source.pg, host=f"{DEAD},{source.host}", pair="p1", rest_port=rest
    )
    config = ServerConfig("sh1", members, immediate_checkpoint=True)
    took: dict[str, float] = {}
    with silent_port(DEAD, source.port), silent_port(DEAD, rest):
        async with patroni_rest(source.host, rest, 200), Barman(layout) as barman:
            async with asyncio.timeout(600):
                started = time.monotonic()
                await barman.ensure([config])  # receive-wal --create-slot
                took["ensure"] = time.monotonic() - started
                started = time.monotonic()
                await barman.streaming("sh1")
                took["streaming"] = time.monotonic() - started
                started = time.monotonic()
                failing = await barman.check("sh1")
                took["check"] = time.monotonic() - started
                started = time.monotonic()
                backup_id = await barman.backup("sh1")  # switch-wal, check, backup
                took["backup"] = time.monotonic() - started
                started = time.monotonic()
                after = await barman.check("sh1")
                took["check after"] = time.monotonic() - started
            # barman.conf lists the primary first; the server as given stands.
            assert conf_hosts(layout.barman / "barman.conf")["sh1"] == f"{source.host},{DEAD}"
            assert barman.servers["sh1"] == config
            assert barman.streams._sup.children["receive-wal:sh1"].restarts == 0
            # ensure again with the same members keeps the order it found.
            await barman.ensure([config])
            assert conf_hosts(layout.barman / "barman.conf")["sh1"] == f"{source.host},{DEAD}"
    assert processes_under(layout.data_dir) == []
    # Before the first base backup only the archive's own checks fail.
    assert {f.split(":")[0] for f in failing} <= {"minimum redundancy requirements", "wal archive"}
    assert backup_id and after == [], (failing, after)
    # Each of Barman's connections waited 10 s on the silent member: 10 s,
    # 21 s, 21 s, 73 s and 21 s before; 0.3 s, 0.3 s, 0.3 s, 2 s, 0.3 s now.
    assert max(took.values()) < 8, took
