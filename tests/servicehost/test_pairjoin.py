"""The servicehost's side of a replacement (servicehost/pairjoin.py): what a
survivor answers to a repeat, what a new member refuses, and what joining
records, on a stand-in for the ServiceHost (no Patroni runs here: the
member's start is the supervisor's, which is not running)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from roost.servicehost.pairjoin import PairSwap
from roost.servicehost.pgpair import PAIR_FILE, PairError, PairPlan, for_host, new_pair
from roost.servicehost.supervised import Servers
from roost.wire.messages import Ok, PairJoin, PairPlanned, PairReplace

ETCD = ["10.0.0.7", "10.0.0.8", "10.0.0.9"]


def fake_host(tmp_path: Path, address: str, pair: PairPlan | None, services: int = 0) -> Any:
    return SimpleNamespace(
        pg_pair=pair,
        pair_sup=None,
        host=address,
        state=SimpleNamespace(services={f"app{i}:redis": object() for i in range(services)}),
        layout=SimpleNamespace(data_dir=tmp_path, logs=tmp_path / "logs"),
        sup=Servers(logging.getLogger("test")),
        settings=SimpleNamespace(restart_backoff_max_s=5.0),
    )


def plan_of(name: str = "p1") -> PairPlan:
    return new_pair(name, ["10.0.0.1", "10.0.0.2"], ETCD)


async def test_a_repeat_of_a_replacement_answers_the_new_members_plan(tmp_path: Path) -> None:
    done = msgspec.structs.replace(plan_of(), hosts=["10.0.0.5", "10.0.0.2"], host="10.0.0.2")
    swap = PairSwap(fake_host(tmp_path, "10.0.0.2", done))
    reply = await swap.replace(PairReplace(pair="p1", old="10.0.0.1", new="10.0.0.5"))
    assert isinstance(reply, PairPlanned)
    got = msgspec.json.decode(reply.plan, type=PairPlan)
    assert got == for_host(done, "10.0.0.5")


async def test_a_survivor_refuses_what_is_not_its_pair(tmp_path: Path) -> None:
    with pytest.raises(PairError, match="in no pair"):
        await PairSwap(fake_host(tmp_path, "10.0.0.2", None)).replace(
            PairReplace(pair="p1", old="10.0.0.1", new="10.0.0.5")
        )
    with pytest.raises(PairError, match="in pair p1, not p2"):
        await PairSwap(fake_host(tmp_path, "10.0.0.2", for_host(plan_of(), "10.0.0.2"))).replace(
            PairReplace(pair="p2", old="10.0.0.1", new="10.0.0.5")
        )


def joining(plan: PairPlan, host: str) -> PairJoin:
    return PairJoin(plan=msgspec.json.encode(for_host(plan, host)))


@pytest.mark.parametrize(
    ("address", "pair", "services", "msg", "error"),
    [
        ("10.0.0.5", None, 0, PairJoin(plan=b"{not json"), "not a pair's plan"),
        ("10.0.0.5", "p2", 0, None, "already in pair p2"),
        ("10.0.0.5", None, 2, None, "holds 2 app service"),
        ("10.0.0.6", None, 0, None, "names 10.0.0.5 as this member; this host is 10.0.0.6"),
    ],
)
async def test_a_new_member_refuses_and_changes_nothing(
    tmp_path: Path,
    address: str,
    pair: str | None,
    services: int,
    msg: PairJoin | None,
    error: str,
) -> None:
    replaced = msgspec.structs.replace(plan_of(), hosts=["10.0.0.5", "10.0.0.2"])
    own = None
    if pair:
        own = for_host(msgspec.structs.replace(plan_of(pair), hosts=[address, "10.0.0.3"]), address)
    host = fake_host(tmp_path, address, own, services)
    with pytest.raises(PairError, match=error):
        await PairSwap(host).join(msg or joining(replaced, "10.0.0.5"))
    assert not (tmp_path / PAIR_FILE).exists() and host.pair_sup is None


async def test_joining_records_the_plan_and_starts_the_member(tmp_path: Path) -> None:
    replaced = msgspec.structs.replace(plan_of(), hosts=["10.0.0.5", "10.0.0.2"])
    host = fake_host(tmp_path, "10.0.0.5", None)
    swap = PairSwap(host)
    assert isinstance(await swap.join(joining(replaced, "10.0.0.5")), Ok)
    saved = msgspec.json.decode((tmp_path / PAIR_FILE).read_bytes(), type=PairPlan)
    assert saved == for_host(replaced, "10.0.0.5") == host.pg_pair
    assert (tmp_path / PAIR_FILE).stat().st_mode & 0o777 == 0o600, "it holds the passwords"
    assert host.pair_sup is not None and host.sup._queued("pgpair"), "its start is queued"
    # A repeat is answered, nothing more.
    again = await swap.join(joining(replaced, "10.0.0.5"))
    assert isinstance(again, Ok) and "already" in again.detail
