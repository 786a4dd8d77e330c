"""A servicehost pair's plan: hosts, its own Patroni scope and ports, the proxy's servers (pure)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from roost import patroni
from roost.proc.exits import ConfigError
from roost.servicehost.pgpair import (
    PAIR_FILE,
    PairError,
    admin_url,
    for_host,
    listener_servers,
    load_plan,
    member,
    new_pair,
)

ETCD = ["10.9.0.1", "10.9.0.2", "10.9.0.3"]


def counter() -> Callable[[int], str]:
    n = iter(range(100))
    return lambda _size: f"pw{next(n)}"


def test_a_pair_is_its_own_patroni_cluster_beside_the_state_database() -> None:
    plan = for_host(new_pair("p1", ["10.9.0.5", "10.9.0.6"], ETCD, counter()), "10.9.0.6")
    m = member(plan)
    assert m.scope == "apps-p1" and m.host == "10.9.0.6" and m.etcd == ETCD
    # Not the state database's ports (5433/8008) nor the servicehost's own PostgreSQL.
    assert (m.pg_port, m.rest_port) == (5434, 8009)
    # Patroni's rule, and a dead primary's key gone soon enough for a
    # failover within 15 s (pgpair.PairPlan's comment): ttl, plus etcd's
    # re-election and lease extension, plus Patroni's 2 s ask of the old leader.
    assert m.loop_wait + 2 * m.retry_timeout <= m.ttl <= 8
    assert m.retry_timeout >= 3  # outlasts an etcd re-election: no needless demotion
    assert len({plan.superuser_password, plan.replication_password, plan.rest_password}) == 3
    c = patroni.config(m, Path("/d"), Path("/bin"))
    dcs = c["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True
    assert dcs["postgresql"]["parameters"]["synchronous_commit"] == "remote_write"


def test_the_proxy_and_the_admin_reach_both_members() -> None:
    plan = new_pair("p1", ["10.9.0.5", "[fd00::6]"], ETCD, counter())
    assert listener_servers(plan) == [("10.9.0.5", 5434, 8009), ("fd00::6", 5434, 8009)]
    url = admin_url(plan, "app1")
    assert url.endswith(
        "/app1?host=10.9.0.5,fd00::6&port=5434,5434&target_session_attrs=read-write"
    )


@pytest.mark.parametrize(
    ("name", "hosts", "etcd", "says"),
    [
        ("P 1", ["a", "b"], ETCD, "lower-case"),
        ("p1", ["a"], ETCD, "two different"),
        ("p1", ["a", "a"], ETCD, "two different"),
        ("p1", ["a", "b"], ETCD[:2], "odd number"),
    ],
)
def test_what_cannot_make_a_pair(name: str, hosts: list[str], etcd: list[str], says: str) -> None:
    with pytest.raises(PairError, match=says):
        new_pair(name, hosts, etcd)


def test_for_host_refuses_a_stranger() -> None:
    with pytest.raises(PairError, match="not a servicehost of pair p1"):
        for_host(new_pair("p1", ["a", "b"], ETCD), "c")


def test_load_plan(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="in no pair"):
        load_plan(tmp_path)
    plan = new_pair("p1", ["a", "b"], ETCD)
    (tmp_path / PAIR_FILE).write_bytes(msgspec.json.encode(plan))
    with pytest.raises(ConfigError, match="names no member"):
        load_plan(tmp_path)
    (tmp_path / PAIR_FILE).write_bytes(msgspec.json.encode(for_host(plan, "b")))
    assert load_plan(tmp_path).host == "b"
    (tmp_path / PAIR_FILE).write_text(json.dumps({"name": 3}))
    with pytest.raises(ConfigError):
        load_plan(tmp_path)
