"""The filers' store in the state database's PostgreSQL (datadir/weedstore.py):
its place from the state URL (pure), cluster init's bundles (no processes),
and its role and database made on a real PostgreSQL as the controller makes
them (controller/filerstore.py)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import msgspec
import pytest
import sqlalchemy
from click.testing import CliRunner

from roost.cli.main import cli
from roost.controller import filerstore
from roost.datadir import weedstore
from roost.datadir.weedplan import PLAN_FILE, FilerStore, PlanError, WeedPlan
from roost.statedb.plan import STATE_FILE, StateDbPlan, bootstrap_sql
from tests.pgserver import postgres_server


def test_store_from_a_patroni_url_names_both_members() -> None:
    url = (
        "postgresql+psycopg://roost:pw@/roost?host=10.9.0.1,10.9.0.50&port=5433,5433"
        "&target_session_attrs=read-write"
    )
    store = weedstore.store_for(url, token=lambda n: "t" * n)
    assert store == FilerStore(hosts=["10.9.0.1", "10.9.0.50"], port=5433, password="t" * 24)
    assert weedstore.store_for("postgresql://roost@10.0.0.1/roost").port == 5432


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////var/lib/roost/state.db",
        "postgresql+psycopg://roost@/roost?host=/run/postgresql",  # a socket: not the filers'
        "postgresql://roost@/roost?host=a,b&port=1,2",
        "not a url",
    ],
)
def test_no_store_where_the_filers_cannot_reach_one(url: str) -> None:
    with pytest.raises(PlanError):
        weedstore.store_for(url)


def test_statements_refuse_what_would_not_be_a_name_or_a_token() -> None:
    good = FilerStore(hosts=["h"], port=5432, password="a" * 32)
    assert weedstore.statements(good)[0] == f"CREATE ROLE roost_weed LOGIN PASSWORD '{'a' * 32}'"
    for bad in (
        msgspec.structs.replace(good, password="x'; DROP DATABASE roost; --"),
        msgspec.structs.replace(good, user="Robert'); DROP"),
        msgspec.structs.replace(good, password=""),
    ):
        with pytest.raises(PlanError):
            weedstore.statements(bad)


def _files(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_cluster_init_with_patroni_makes_the_filers_role_in_its_bootstrap(tmp_path: Path) -> None:
    ctl = ["10.9.0.1", "10.9.0.2", "10.9.0.3"]
    args = [
        "cluster", "init", "--controllers", ",".join(ctl), "--servicehosts", "10.9.0.41",
        "--runners", "10.9.0.21", "--state-hosts", "10.9.0.1,10.9.0.50",
        "--out", str(tmp_path),
    ]  # fmt: skip
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "filers on 10.9.0.1 and 10.9.0.2" in " ".join(r.output.split())
    plans = {
        h: msgspec.json.decode(_files(tmp_path / f"{h}.tar.gz")[PLAN_FILE], type=WeedPlan)
        for h in ["10.9.0.1", "10.9.0.2", "10.9.0.21"]
    }
    store = plans["10.9.0.1"].store
    assert store is not None and store.hosts == ["10.9.0.1", "10.9.0.50"] and store.port == 5433
    assert plans["10.9.0.2"].store == store
    runner_store = plans["10.9.0.21"].store
    assert runner_store is not None and runner_store.password == ""
    standby = msgspec.json.decode(
        _files(tmp_path / "10.9.0.50.tar.gz")[STATE_FILE], type=StateDbPlan
    )
    assert standby.weed_password == store.password
    assert f"CREATE ROLE roost_weed LOGIN PASSWORD '{store.password}'" in bootstrap_sql(standby)
    etcd_only = msgspec.json.decode(
        _files(tmp_path / "10.9.0.3.tar.gz")[STATE_FILE], type=StateDbPlan
    )
    assert etcd_only.weed_password == ""


def test_cluster_init_with_sqlite_says_one_filer_keeps_the_tree(tmp_path: Path) -> None:
    args = [
        "cluster", "init", "--controllers", "10.9.0.1", "--servicehosts", "10.9.0.41",
        "--runners", "10.9.0.21", "--out", str(tmp_path),
    ]  # fmt: skip
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    assert "filer on 10.9.0.1 (metadata in that host's own store" in said, said
    plan = msgspec.json.decode(_files(tmp_path / "10.9.0.21.tar.gz")[PLAN_FILE], type=WeedPlan)
    assert plan.store is None and plan.filers == ["10.9.0.1"]


def _passwords_for_the_filers(admin: str) -> None:
    """initdb trusts every local login: the filers' role must give its password."""
    engine = sqlalchemy.create_engine(admin)
    with engine.connect() as db:
        hba = Path(str(db.execute(sqlalchemy.text("SHOW hba_file")).scalar()))
        hba.write_text("host all roost_weed 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        db.execute(sqlalchemy.text("SELECT pg_reload_conf()"))
    engine.dispose()


@pytest.mark.e2e
def test_ensure_makes_the_role_and_database_once_and_resets_the_password() -> None:
    with postgres_server() as admin:
        _passwords_for_the_filers(admin)
        host = sqlalchemy.make_url(admin)
        assert host.host is not None and host.port is not None
        store = FilerStore(hosts=[host.host], port=host.port, password="first_password_0123")
        assert not filerstore.usable(store)
        filerstore.ensure(admin, store)
        assert filerstore.usable(store)
        # It is the filers' own: their role owns their database.
        engine = sqlalchemy.create_engine(filerstore.store_url(store))
        with engine.connect() as db:
            owner = db.execute(
                sqlalchemy.text(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'roost_weed'"
                )
            ).scalar()
        engine.dispose()
        assert owner == "roost_weed"
        filerstore.ensure(admin, store)  # again: nothing to do
        again = msgspec.structs.replace(store, password="second_password_456")
        assert not filerstore.usable(again)
        filerstore.ensure(admin, again)  # a later init's bundle: its password
        assert filerstore.usable(again) and not filerstore.usable(store)


def test_the_controller_makes_the_store_on_the_members_in_the_state_urls_order() -> None:
    """keep_ensured lists the state URL's members the primary first
    (controller/stateorder.ordered_url) and the filers' own login the same."""
    store = FilerStore(hosts=["10.0.0.1", "10.0.0.2"], port=5433, password="x" * 24)
    url = "postgresql+psycopg://roost:p@/roost?host={}&port=5433,5433"
    ordered = filerstore._in_order_of(url.format("10.0.0.2,10.0.0.1"), store)
    assert ordered.hosts == ["10.0.0.2", "10.0.0.1"] and ordered.password == store.password
    assert filerstore._in_order_of(url.format("10.0.0.1,10.0.0.3"), store) == store
    assert filerstore._in_order_of("sqlite:////x.db", store) == store
