"""backupd asking the servicehosts what they hold (pure, no sockets; a fake
clock and a stand-in for the servicehosts' answers).

A pair's two members are asked one after the other (each makes the backup
role on the pair's one primary), refreshes never overlap, a servicehost
that refused is remembered, and a capture that misses what it was asked
for asks it again before giving up; a database that truly is not there is
a clear error naming who did not answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from roost.backups.sources import (
    Pullers,
    SourceError,
    Unanswered,
    ask_again,
    ask_groups,
    missing,
)
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.messages import BackupSource, Msg, PgSource

SH = [Endpoint(f"tcp://10.0.0.{n}:1", f"k{n}") for n in (5, 6, 7)]
A, B, C = (ep.address for ep in SH)


def paired(holder: str, dbs: dict[str, str]) -> BackupSource:
    pair = PgSource(host="10.0.0.5,10.0.0.6", port=5434, user="u", password="p",
                    databases=dbs, pair="pair-1")  # fmt: skip
    return BackupSource(host_id="servicehost", holder_id=holder, pg_pair=pair)


def alone(holder: str) -> BackupSource:
    own = PgSource(host=holder, port=5432, user="u", password="p")
    return BackupSource(host_id="servicehost", holder_id=holder, postgres=own)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Servicehosts(Pullers):
    """Pullers whose servicehosts are answers in a dict; a pair's members
    asked at once refuse, as the pair's PostgreSQL did ("tuple
    concurrently updated"); `refusals` more refusals per address."""

    def __init__(
        self, answers: dict[str, BackupSource], clock: Clock, eps: list[Endpoint] = SH
    ) -> None:
        super().__init__(node=None, cluster=ClusterConfig(endpoints={"servicehost": eps}),  # type: ignore[arg-type]
                         clock=clock)  # fmt: skip
        self.answers = answers
        self.refusals: dict[str, int] = {}
        self.asking: set[str] = set()
        self.asked: list[str] = []

    async def _ask(self, client: Any, msg: Msg, timeout: float, what: str, tries: int = 1) -> Msg:
        address = what
        self.asked.append(address)
        together = {a for a in self.asking if a in (A, B)}
        self.asking.add(address)
        try:
            await asyncio.sleep(0.01)
            if address in (A, B) and together:
                raise SourceError(f"{address}: tuple concurrently updated", refused=True)
            if self.refusals.get(address, 0) > 0:
                self.refusals[address] -= 1
                raise SourceError(f"{address}: pair pair-1's PostgreSQL: refused", refused=True)
            if address not in self.answers:
                raise SourceError(f"{address}: no reply after 1 tries")
            return self.answers[address]
        finally:
            self.asking.discard(address)

    def servicehost(self, ep: Endpoint) -> Any:
        return ep.address


def test_a_pairs_members_are_asked_in_turn_the_others_at_once() -> None:
    seen = {A: paired("10.0.0.5", {}), B: paired("10.0.0.6", {}), C: alone("10.0.0.7")}
    assert ask_groups([A, B, C], seen) == [[A, B], [C]]
    # Not heard yet: nothing says they are a pair; one heard names the other.
    assert ask_groups([A, B, C], {}) == [[A], [B], [C]]
    assert ask_groups([A, B, C], {B: seen[B]}) == [[A, B], [C]]


def test_ask_again_only_when_something_asked_for_is_missing_and_one_refused() -> None:
    assert ask_again(["pgdump"], [], [A])
    assert not ask_again(["pgdump"], ["pgdump"], [A])
    assert not ask_again(["pgdump"], [], [])  # everyone answered: it is not there
    assert ask_again([], ["redis"], [A])  # everything: a refusal may hide a kind


def test_a_missing_database_says_who_did_not_answer_and_since_when() -> None:
    assert missing("ledger", "database", {}, 5.0) == (
        "ledger has no database: no servicehost lists one (add the service first)"
    )
    said = missing("ledger", "database", {A: Unanswered(100.0, "refused: busy", True)}, 190.0)
    assert said == (
        "ledger has no database that the servicehosts which answered list; servicehost "
        f"{A} has not answered for 90 s (refused: busy)"
    )


async def test_the_pairs_members_no_longer_refuse_each_other() -> None:
    clock = Clock()
    p = Servicehosts({A: paired("10.0.0.5", {}), B: paired("10.0.0.6", {})}, clock, SH[:2])
    # First ask: nothing known, both at once, one of them refused.
    failed = await p.refresh()
    assert len(failed) == 1 and p.refused() == failed
    # The database added on the pair, through the one that refused.
    p.answers[failed[0]] = paired(p.answers[failed[0]].holder_id, {"ledger": "ledger_db"})
    assert await p.refresh() == [] and p.unanswered == {}
    w = p.where("ledger")
    assert w is not None and w.database == "ledger_db"


async def test_refreshes_do_not_overlap() -> None:
    p = Servicehosts({A: paired("10.0.0.5", {}), B: paired("10.0.0.6", {})}, Clock(), SH[:2])
    p.seen = dict(p.answers)
    await asyncio.gather(p.refresh(), p.refresh())  # a capture's and the loop's
    assert p.unanswered == {} and len(p.asked) == 4


async def test_a_refusal_is_remembered_from_its_first_time_and_forgotten_on_an_answer() -> None:
    clock = Clock()
    p = Servicehosts({A: alone("10.0.0.5")}, clock)
    p.refusals[A] = 2
    await p.refresh(only=[A])
    clock.now += 30
    await p.refresh(only=[A])
    assert p.unanswered[A].since == 1000.0 and p.unanswered[A].refused
    assert "for 30 s" in p.missing("ledger", "database")
    await p.refresh(only=[A])
    assert p.unanswered == {}


@pytest.mark.parametrize("silent", [True, False])
async def test_only_a_refusal_is_asked_again(silent: bool) -> None:
    p = Servicehosts({C: alone("10.0.0.7")}, Clock())
    if not silent:
        p.answers[A] = alone("10.0.0.5")
        p.refusals[A] = 1
    await p.refresh(only=[A, C])
    assert p.refused() == ([] if silent else [A])
