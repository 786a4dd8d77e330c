"""roost.patroni: a member's configuration and Patroni's view of a cluster (pure)."""

from __future__ import annotations

from pathlib import Path

from roost import patroni

MEMBER = patroni.Member(
    scope="pair-a",
    host="10.9.0.5",
    etcd=["10.9.0.1", "10.9.0.2", "10.9.0.3"],
    etcd_client_port=2379,
    pg_port=5434,
    rest_port=8009,
    ttl=15,
    loop_wait=3,
    retry_timeout=5,
    superuser_password="su",
    replication_password="rep",
    rest_password="rest",
    parameters={"max_connections": 500},
)


def test_config_is_synchronous_in_its_own_scope_and_ports() -> None:
    c = patroni.config(MEMBER, Path("/d/pg"), Path("/usr/lib/postgresql/15/bin"))
    assert c["scope"] == "pair-a" and c["namespace"] == "/roost/"
    assert c["postgresql"]["listen"] == "10.9.0.5:5434"
    assert c["restapi"]["listen"] == "10.9.0.5:8009"
    dcs = c["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True and dcs["synchronous_mode_strict"] is False
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
    # A member's own parameters override the shared ones.
    assert dcs["postgresql"]["parameters"]["max_connections"] == 500
    assert c["bootstrap"]["post_bootstrap"].endswith("/d/pg/bootstrap.sql")
    assert c["etcd3"]["hosts"] == ["10.9.0.1:2379", "10.9.0.2:2379", "10.9.0.3:2379"]
    # A standby's copy starts at once, not after a spread checkpoint.
    assert {"checkpoint": "fast"} in c["postgresql"]["basebackup"]


def test_view_of_patroni_cluster_answer() -> None:
    answer = {
        "members": [
            {"name": "b", "role": "sync_standby", "state": "streaming", "host": "10.0.0.2",
             "port": 5434, "lag": 120},
            {"name": "a", "role": "leader", "state": "running", "host": "10.0.0.1", "port": 5434},
            {"name": "c", "role": "replica", "state": "stopped", "host": "10.0.0.3",
             "port": 5434, "lag": "unknown"},
        ],
        "scope": "pair-a",
    }  # fmt: skip
    v = patroni.view(answer)
    assert v.primary is not None and v.primary.name == "a" and v.primary.lag_bytes is None
    assert [m.name for m in v.standbys] == ["b", "c"]
    assert v.synchronous is not None and v.synchronous.lag_bytes == 120
    assert v.standbys[1].lag_bytes is None  # "unknown": not streaming
    empty = patroni.view({})
    assert empty.primary is None and empty.standbys == [] and empty.synchronous is None


def test_addresses() -> None:
    assert patroni.bare("[fd00::1]") == "fd00::1"
    assert patroni.url_host("fd00::1") == "[fd00::1]"
    assert patroni.url_host("10.0.0.1") == "10.0.0.1"


# ------------------------------------------------------------ which member first

A, B, C = "10.9.0.5", "10.9.0.6", "10.9.0.7"
H = patroni.Heard


def test_the_primary_first_then_those_that_answered_then_the_silent() -> None:
    assert patroni.primary_first([A, B], {A: H.SILENT, B: H.PRIMARY}) == [B, A]
    assert patroni.primary_first([A, B], {A: H.ANSWERED, B: H.PRIMARY}) == [B, A]
    assert patroni.primary_first([A, B], {A: H.SILENT, B: H.ANSWERED}) == [B, A]
    assert patroni.primary_first([A, B, C], {A: H.SILENT, B: H.ANSWERED, C: H.PRIMARY}) == [
        C,
        B,
        A,
    ]


def test_the_order_given_is_kept_among_equals_and_no_host_is_dropped() -> None:
    assert patroni.primary_first([A, B], {A: H.ANSWERED, B: H.ANSWERED}) == [A, B]
    assert patroni.primary_first([A, B], {A: H.SILENT, B: H.SILENT}) == [A, B]
    assert patroni.primary_first([B, A], {}) == [B, A]  # nothing heard: as given
    # A host not heard of counts as silent (a probe cut short by the primary's answer).
    assert patroni.primary_first([A, B, C], {C: H.PRIMARY, B: H.ANSWERED}) == [C, B, A]
    assert patroni.primary_first([A, B, C], {B: H.PRIMARY}) == [B, A, C]
    assert patroni.primary_first([A], {A: H.SILENT}) == [A]
