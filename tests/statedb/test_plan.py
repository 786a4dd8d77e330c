"""The state database's plan and what it renders for etcd, Patroni and the
controllers, as data (roost.statedb.plan)."""

from __future__ import annotations

import itertools
import shlex
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from roost.statedb.plan import (
    PlanError,
    StateDbPlan,
    bootstrap_sql,
    etcd_argv,
    etcd_name,
    for_host,
    hosts_of,
    new_plan,
    patroni_config,
    state_url,
)

ETCD = ["10.9.0.1", "10.9.0.2", "10.9.0.3"]
PG = ["10.9.0.1", "10.9.0.4"]


def _plan(etcd: list[str] = ETCD, pg: list[str] = PG) -> StateDbPlan:
    counter = itertools.count()
    return new_plan("roost", etcd, pg, token=lambda n: f"pw{next(counter)}x{n}")


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize(
    ("etcd", "pg", "why"),
    [
        (ETCD[:2], PG, "odd number"),
        ([*ETCD, "10.9.0.9"], PG, "odd number"),
        (ETCD, PG[:1], "two hosts"),
        (ETCD, [*PG, "10.9.0.5"], "two hosts"),
        (ETCD, [PG[0], PG[0]], "named twice"),
    ],
)
def test_hosts_that_cannot_make_a_cluster_are_refused(
    etcd: list[str], pg: list[str], why: str
) -> None:
    with pytest.raises(PlanError, match=why):
        new_plan("roost", etcd, pg)


def test_fresh_passwords_each_different() -> None:
    plan = new_plan("roost", ETCD, PG)
    secrets = [
        plan.superuser_password,
        plan.replication_password,
        plan.roost_password,
        plan.rest_password,
    ]
    assert len(set(secrets)) == 4 and all(len(s) >= 24 for s in secrets)
    assert new_plan("roost", ETCD, PG).roost_password != plan.roost_password


def test_secrets_go_only_to_the_patroni_hosts() -> None:
    plan = _plan()
    assert hosts_of(plan) == ["10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4"]
    for host in hosts_of(plan):
        mine = for_host(plan, host)
        assert mine.host == host
        holds = bool(mine.roost_password and mine.superuser_password and mine.rest_password)
        assert holds == (host in PG), host
        assert mine.replication_password == (plan.replication_password if host in PG else "")
    with pytest.raises(PlanError):
        for_host(plan, "10.9.0.99")


def test_controllers_url_names_both_members_and_wants_the_writable_one() -> None:
    plan = _plan()
    url = state_url(plan)
    _, kwargs = create_engine(url).dialect.create_connect_args(make_url(url))
    assert kwargs["host"] == "10.9.0.1,10.9.0.4"
    assert kwargs["port"] == "5433,5433"
    assert kwargs["target_session_attrs"] == "read-write"
    assert (kwargs["user"], kwargs["password"], kwargs["dbname"]) == (
        "roost",
        plan.roost_password,
        "roost",
    )
    # As libpq's own URL (what pg_dump is given for a platform snapshot).
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    assert "host=10.9.0.1%2C10.9.0.4" in libpq and "port=5433%2C5433" in libpq


def test_every_etcd_member_starts_with_the_same_initial_cluster(tmp_path: Path) -> None:
    plan = _plan()
    argvs = {h: etcd_argv(for_host(plan, h), "/usr/bin/etcd", tmp_path / h) for h in ETCD}
    initial = {_flag(a, "--initial-cluster") for a in argvs.values()}
    assert len(initial) == 1
    members = dict(m.split("=") for m in initial.pop().split(","))
    assert members == {etcd_name(h): f"http://{h}:2380" for h in ETCD}
    for host, argv in argvs.items():
        assert argv[0] == "/usr/bin/etcd"
        assert _flag(argv, "--name") == etcd_name(host)
        assert _flag(argv, "--listen-client-urls") == f"http://{host}:2379"
        assert _flag(argv, "--data-dir") == str(tmp_path / host)
        assert _flag(argv, "--initial-cluster-token") == "roost"


def test_patroni_runs_synchronous_with_a_leader_key_short_enough(tmp_path: Path) -> None:
    plan = for_host(_plan(), PG[1])
    conf = patroni_config(plan, tmp_path, Path("/usr/lib/postgresql/15/bin"))
    dcs = conf["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True
    # Patroni's own rule; and a dead primary's key is gone well inside 30 s.
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"] <= 20
    assert conf["name"] == PG[1] and conf["scope"] == "roost"
    assert conf["etcd3"]["hosts"] == [f"{h}:2379" for h in ETCD]
    assert conf["postgresql"]["listen"] == f"{PG[1]}:5433"
    assert conf["postgresql"]["data_dir"] == str(tmp_path / "pgdata")
    auth = conf["postgresql"]["authentication"]
    assert auth["superuser"]["password"] == plan.superuser_password
    assert auth["replication"]["password"] == plan.replication_password
    assert conf["restapi"]["authentication"]["password"] == plan.rest_password
    # Over the network, a password always; trust only on the private socket.
    for line in conf["postgresql"]["pg_hba"]:
        assert line.startswith("local") or line.endswith("scram-sha-256"), line
    assert conf["postgresql"]["parameters"]["unix_socket_directories"] == str(tmp_path / "run")
    # Patroni appends the connection string to this command.
    cmd = shlex.split(conf["bootstrap"]["post_bootstrap"])
    assert cmd[0] == "/usr/lib/postgresql/15/bin/psql"
    assert cmd[-2:] == ["-f", str(tmp_path / "bootstrap.sql")]


def test_bootstrap_makes_the_controllers_account_and_database() -> None:
    plan = _plan()
    sql = bootstrap_sql(plan)
    assert f"CREATE ROLE roost LOGIN PASSWORD '{plan.roost_password}';" in sql
    assert "CREATE DATABASE roost OWNER roost;" in sql
    assert "SUPERUSER" not in sql
    with pytest.raises(PlanError):
        bootstrap_sql(StateDbPlan(scope="roost", etcd=ETCD, patroni=PG, roost_password="x'; --"))


def test_ipv6_members_are_bracketed_in_urls_and_bare_for_libpq(tmp_path: Path) -> None:
    etcd = ["[fd00::1]", "[fd00::2]", "[fd00::3]"]
    plan = _plan(etcd, ["[fd00::1]", "[fd00::2]"])
    url = state_url(plan)
    _, kwargs = create_engine(url).dialect.create_connect_args(make_url(url))
    assert kwargs["host"] == "fd00::1,fd00::2"
    argv = etcd_argv(for_host(plan, etcd[0]), "etcd", tmp_path)
    assert _flag(argv, "--listen-peer-urls") == "http://[fd00::1]:2380"
    assert etcd_name(etcd[0]) == "etcd-fd00-1"
    conf = patroni_config(for_host(plan, etcd[1]), tmp_path, Path("/bin"))
    assert conf["postgresql"]["listen"] == "fd00::2:5433"
    assert conf["restapi"]["listen"] == "[fd00::2]:8008"


def test_a_scope_etcd_and_patroni_cannot_take_is_refused() -> None:
    with pytest.raises(PlanError, match="cluster name"):
        new_plan("My Cluster", ETCD, PG)
