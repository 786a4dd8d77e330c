"""Apps' databases on a servicehost pair as backupd sees them (pure, no sockets).

Both servicehosts of a pair answer with the pair's PostgreSQL (both
members, the one taking writes): backupd makes it one cluster, named
after the pair, holding the databases either recorded; Barman reaches it
with a conninfo naming both members and libpq's read-write target, and a
passfile line per member. The servicehost's side: one backup password
both members derive, slot names checked, the Patroni PATCH that declares
them permanent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from roost import patroni
from roost.backups.barmanconf import conninfo_of, passfile_line
from roost.backups.pgfacts import PgConn
from roost.backups.sources import Pullers, pair_key
from roost.servicehost import pairbackup
from roost.servicehost.pgpair import for_host, member, new_pair
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.messages import BackupSource, BackupSourceRequest, PgSource, RedisSource

SH = [Endpoint("tcp://10.0.0.5:1", "k1"), Endpoint("tcp://10.0.0.6:1", "k2")]


def pair_source(dbs: dict[str, str]) -> PgSource:
    return PgSource(
        host="10.0.0.5,10.0.0.6", port=5434, user="roost_backup", password="pw",
        databases=dbs, pair="pair-1",
    )  # fmt: skip


def pullers() -> Pullers:
    p = Pullers(node=None, cluster=ClusterConfig(endpoints={"servicehost": SH}))  # type: ignore[arg-type]
    own = PgSource(host="10.0.0.5", port=5432, user="roost_backup", password="x")
    p.seen = {
        SH[0].address: BackupSource(
            host_id="servicehost", holder_id="10.0.0.5", postgres=own,
            pg_pair=pair_source({"a": "app_a"}),
        ),
        SH[1].address: BackupSource(
            host_id="servicehost", holder_id="10.0.0.6",
            postgres=PgSource(host="10.0.0.6", port=5432, user="roost_backup", password="y"),
            pg_pair=pair_source({"b": "app_b"}),
        ),
    }  # fmt: skip
    return p


def test_a_pair_is_one_cluster_holding_what_either_member_recorded() -> None:
    p = pullers()
    clusters = p.clusters()
    assert sorted(clusters) == ["10.0.0.5", "10.0.0.6", "apps-pair-1"]
    _ep, src = clusters["apps-pair-1"]
    assert src.databases == {"a": "app_a", "b": "app_b"} and src.pair == "pair-1"
    assert p.sources().databases == ("a", "b")
    w = p.where("b")
    assert w is not None and w.postgres is not None
    assert (w.host, w.database, w.cluster) == ("10.0.0.6", "app_b", "apps-pair-1")
    assert w.postgres.pair == "pair-1" and p.kinds_of("b") == ["pgdump"]
    assert pair_key(src) == "apps-pair-1"


def test_an_app_is_answered_for_by_the_member_that_holds_its_database() -> None:
    """The other member, which has only the app's Redis replica, may have
    answered first: the app's restore steps still go to the holder."""
    p = pullers()
    first, holder = SH[0].address, SH[1].address
    replica = RedisSource(app="b", host="10.0.0.5", port=7000, user="u", password="p")
    p.seen = {
        first: msgspec.structs.replace(p.seen[first], redis=[replica]),
        holder: p.seen[holder],
    }
    w = p.where("b")
    assert w is not None and w.postgres is not None and w.redis == replica
    assert (w.host, w.endpoint, w.database) == ("10.0.0.6", SH[1], "app_b")


def test_barman_and_libpq_reach_whichever_member_takes_writes() -> None:
    src = pair_source({})
    info = conninfo_of(src, Path("/b/pgpass"))
    assert "host=10.0.0.5,10.0.0.6 port=5434" in info
    assert "target_session_attrs=read-write" in info and "tcp_user_timeout=" in info
    assert passfile_line(src).splitlines() == [
        "10.0.0.5:5434:*:roost_backup:pw",
        "10.0.0.6:5434:*:roost_backup:pw",
    ]
    assert PgConn.of(src).kwargs("postgres")["target_session_attrs"] == "read-write"
    assert PgConn.of(src).env("postgres")["PGTARGETSESSIONATTRS"] == "read-write"
    # A servicehost's own PostgreSQL is as before.
    own = PgSource(host="10.0.0.5", port=5432, user="roost_backup", password="pw")
    assert "target_session_attrs" not in conninfo_of(own, Path("/b/pgpass"))
    assert "target_session_attrs" not in PgConn.of(own).kwargs("postgres")


def test_both_members_derive_one_backup_password() -> None:
    plan = new_pair("pair-1", ["10.0.0.5", "10.0.0.6"], ["e1", "e2", "e3"])
    other = new_pair("pair-1", ["10.0.0.5", "10.0.0.6"], ["e1", "e2", "e3"])
    pw = pairbackup.backup_password(plan)
    assert pw == pairbackup.backup_password(plan) and len(pw) == 32
    assert pw != pairbackup.backup_password(other)  # another pair's superuser password
    assert plan.superuser_password not in pw


def test_slot_names_are_checked_before_anything_changes() -> None:
    assert pairbackup.check_slots(["b_1", "a", "a"]) == ["a", "b_1"]
    with pytest.raises(pairbackup.PairSlotsRefused, match="not replication slot names"):
        pairbackup.check_slots(["ok", "Bad-Name"])
    with pytest.raises(pairbackup.PairSlotsRefused, match="at most"):
        pairbackup.check_slots([f"s{i}" for i in range(pairbackup.MAX_SLOTS + 1)])


def test_the_patch_declares_missing_slots_permanent_and_caps_their_wal() -> None:
    config: dict[str, Any] = {"ttl": 12, "slots": {"other_backupd": {"type": "physical"}}}
    patch = pairbackup.patch_for(config, ["mine"], 4096)
    assert patch == {
        "slots": {"mine": {"type": "physical"}},
        "postgresql": {"parameters": {"max_slot_wal_keep_size": "4096MB"}},
    }
    done = {
        "slots": {"other_backupd": {"type": "physical"}, "mine": {"type": "physical"}},
        "postgresql": {"parameters": {"max_slot_wal_keep_size": "4096MB"}},
    }
    assert pairbackup.patch_for(done, ["mine"], 4096) == {}
    assert pairbackup.patch_for({}, [], 64) == {
        "postgresql": {"parameters": {"max_slot_wal_keep_size": "64MB"}}
    }


def test_each_member_admits_the_backup_role_for_replication() -> None:
    plan = new_pair("pair-1", ["10.0.0.5", "10.0.0.6"], ["e1", "e2", "e3"])
    hba = patroni.config(member(for_host(plan, "10.0.0.5")), Path("/h"), Path("/bin"))
    lines = hba["postgresql"]["pg_hba"]
    assert "host replication roost_backup 0.0.0.0/0 scram-sha-256" in lines
    assert "host replication roost_backup ::/0 scram-sha-256" in lines


class Asked(Pullers):
    """Pullers whose servicehosts answer from a table, the requests kept."""

    asked: list[BackupSourceRequest]

    async def _ask(self, client: Any, msg: Any, timeout: float, what: str, tries: int = 1) -> Any:
        self.asked.append(msg)
        return self.answer

    def servicehost(self, ep: Endpoint) -> Any:
        return None


async def test_a_pair_first_heard_of_is_asked_again_with_its_slot() -> None:
    p = Asked(node=None, cluster=ClusterConfig(endpoints={"servicehost": SH[:1]}))  # type: ignore[arg-type]
    p.asked = []
    p.answer = BackupSource(host_id="s", holder_id="10.0.0.5", pg_pair=pair_source({}))  # type: ignore[attr-defined]
    slots: list[str] = []
    p.pair_slots = lambda: list(slots) if p.seen else []
    slots.append("barman_apps_pair_1_b")
    assert await p.refresh() == []
    assert [m.pair_slots for m in p.asked] == [[], ["barman_apps_pair_1_b"]]
    # Next time it is asked with its slot at once.
    p.asked.clear()
    assert await p.refresh() == []
    assert [m.pair_slots for m in p.asked] == [["barman_apps_pair_1_b"]]


def test_a_bucket_is_pulled_from_the_member_that_holds_it() -> None:
    """The database's holder answers for the app; its bucket, on the other
    member, is still asked of that one, and goes with the data kind."""
    p = pullers()
    p.seen[SH[0].address] = msgspec.structs.replace(p.seen[SH[0].address], bucket_apps=["b"])
    w = p.where("b")
    assert w is not None and (w.endpoint, w.bucket, w.bucket_at) == (SH[1], True, SH[0])
    assert p.kinds_of("b") == ["pgdump", "data"] and p.sources().data == ("b",)
