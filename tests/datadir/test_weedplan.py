"""Where the shared tree's SeaweedFS processes run, and how (pure)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec
import pytest

from roost.cli import clusterdata
from roost.datadir import filerfront, weedplan
from roost.datadir.weedplan import (
    FilerStore,
    PlanError,
    for_host,
    new_plan,
    parts_for,
    programs,
)


def test_one_master_below_three_controllers_three_from_three() -> None:
    assert new_plan(["c1", "c2"], ["r1", "r2"]).masters == ["c1"]
    plan = new_plan(["c1", "c2", "c3", "c4"], ["r1", "r2"])
    assert plan.masters == ["c1", "c2", "c3"]
    assert plan.filer == "c1"


def test_two_copies_need_two_storage_hosts() -> None:
    with pytest.raises(PlanError, match="two storage hosts"):
        new_plan(["c1"], ["r1", "r1"])
    with pytest.raises(PlanError, match="controller"):
        new_plan([], ["r1", "r2"])


def test_each_part_has_one_owner_on_a_host() -> None:
    plan = new_plan(["c1"], ["s1", "r1", "c1"])
    both = for_host(plan, "c1", ["controller", "runner"])
    assert parts_for(both, "controller") == ["master", "filer"]
    assert parts_for(both, "runner") == ["volume", "mount"]
    svc_and_runner = for_host(plan, "s1", ["servicehost", "runner"])
    assert parts_for(svc_and_runner, "servicehost") == ["volume", "mount"]
    assert parts_for(svc_and_runner, "runner") == []
    with pytest.raises(PlanError):
        for_host(plan, "elsewhere", ["router"])


def test_argv_names_every_master_and_the_mount_root(tmp_path: Path) -> None:
    plan = for_host(
        new_plan(["10.0.0.1", "10.0.0.2", "10.0.0.3"], ["10.0.0.4", "10.0.0.5"]),
        "10.0.0.4",
        ["runner"],
    )
    progs = {p.name: p.argv for p in programs(plan, "runner", "weed", tmp_path, tmp_path / "m")}
    masters = "10.0.0.1:7150,10.0.0.2:7150,10.0.0.3:7150"
    assert f"-mserver={masters}" in progs["volume"]
    assert "-ip=10.0.0.4" in progs["volume"]
    assert f"-dir={tmp_path / 'weed' / 'volume'}" in progs["volume"]
    assert f"-dir={tmp_path / 'm'}" in progs["mount"]
    assert "-filer=10.0.0.1:7152" in progs["mount"]
    ctl = for_host(plan, "10.0.0.2", ["controller"])
    (master,) = programs(ctl, "controller", "weed", tmp_path, tmp_path / "m")
    assert master.name == "master" and f"-peers={masters}" in master.argv
    assert parts_for(ctl, "controller") == ["master"]  # the filer is on the first
    assert weedplan.hosts_of(plan) == [f"10.0.0.{i}" for i in range(1, 6)]


def test_cluster_init_gives_a_tree_only_with_a_servicehost_and_two_storage_hosts() -> None:
    hosts = {"c1": ["controller", "builder"], "s1": ["servicehost"], "r1": ["runner"]}
    shared, why = clusterdata.plan(hosts, True)
    assert shared is not None and why == ""
    assert shared.volumes == ["s1", "r1"]
    bundles: dict[str, dict[str, bytes]] = {h: {} for h in hosts}
    clusterdata.add_to_bundles(bundles, hosts, shared)
    assert clusterdata.bundle_host(bundles["r1"][clusterdata.PLAN_FILE]) == "r1"
    assert clusterdata.plan(hosts, False)[0] is None
    assert "no servicehost" in clusterdata.plan({"c1": ["controller"], "r1": ["runner"]}, True)[1]
    lone = {"c1": ["controller"], "s1": ["servicehost"]}
    assert "two storage hosts" in clusterdata.plan(lone, True)[1]
    with pytest.raises(ValueError, match=r"appdata\.json"):
        clusterdata.bundle_host(b"{}")


STORE = FilerStore(hosts=["10.0.0.9"], port=5432, password="p" * 32)


def test_two_filers_with_a_shared_store_else_one() -> None:
    assert new_plan(["c1", "c2"], ["r1", "r2"]).filers == ["c1"]
    assert new_plan(["c1", "c2"], ["r1", "r2"], STORE).filers == ["c1", "c2"]
    # One controller: the other filer on the first storage host that is not it.
    assert new_plan(["c1"], ["c1", "r1", "r2"], STORE).filers == ["c1", "r1"]
    three = new_plan(["c1", "c2", "c3"], ["r1", "r2"], STORE)
    assert three.masters == ["c1", "c2", "c3"] and three.filers == ["c1", "c2"]
    assert three.filer == "c1"  # what an older reader runs and mounts


def test_a_filer_on_a_storage_host_is_its_servicehost_s_else_its_runner_s() -> None:
    plan = new_plan(["c1"], ["s1", "r1"], STORE)
    svc = for_host(plan, "s1", ["servicehost"])
    assert parts_for(svc, "servicehost") == ["filer", "volume", "front", "mount"]
    runner = for_host(plan, "r1", ["runner"])
    assert parts_for(runner, "runner") == ["volume", "front", "mount"]
    assert parts_for(for_host(plan, "c1", ["controller"]), "controller") == ["master", "filer"]
    # One filer: no front, the mount is given the filer.
    lone = for_host(new_plan(["c1"], ["s1", "r1"]), "r1", ["runner"])
    assert parts_for(lone, "runner") == ["volume", "mount"]


def test_the_store_s_password_only_on_the_filers_hosts() -> None:
    plan = new_plan(["c1", "c2"], ["r1", "r2"], STORE)
    assert for_host(plan, "c2", ["controller"]).store == STORE
    mine = for_host(plan, "r1", ["runner"]).store
    assert mine is not None and mine.password == "" and mine.hosts == ["10.0.0.9"]
    # An older file (one filer, no store) still reads as before.
    old = msgspec.json.decode(
        b'{"masters":["c1"],"filer":"c1","volumes":["r1","r2"],"host":"r1","roles":["runner"]}',
        type=weedplan.WeedPlan,
    )
    assert weedplan.filers_of(old) == ["c1"] and old.store is None


def test_every_mount_is_given_its_host_s_front_to_both_filers(tmp_path: Path) -> None:
    plan = for_host(new_plan(["10.0.0.1", "10.0.0.2"], ["10.0.0.4", "10.0.0.5"], STORE),
                    "10.0.0.4", ["runner"])  # fmt: skip
    progs = {p.name: p.argv for p in programs(plan, "runner", "weed", tmp_path, tmp_path / "m")}
    # Not -filer=A,B: weed mount starts at a random one of a list.
    assert [a for a in progs["mount"] if a.startswith("-filer=")] == ["-filer=10.0.0.4:7153"]
    cfg = tmp_path / "weed" / filerfront.CONFIG_FILE
    assert progs["front"] == ["haproxy", "-db", "-f", str(cfg)]
    assert weedplan.mount_filer(plan) == "10.0.0.4:7153"
    lone = for_host(new_plan(["10.0.0.1"], ["10.0.0.4", "10.0.0.5"]), "10.0.0.4", ["runner"])
    assert weedplan.mount_filer(lone) == "10.0.0.1:7152"


def test_each_front_s_host_runs_an_s3_gateway_given_its_front(tmp_path: Path) -> None:
    plan = for_host(new_plan(["10.0.0.1", "10.0.0.2"], ["10.0.0.4", "10.0.0.5"], STORE),
                    "10.0.0.4", ["runner"])  # fmt: skip
    assert parts_for(plan, "runner") == ["volume", "front", "mount"]  # not asked for
    plan = msgspec.structs.replace(plan, s3_gateways=True)
    assert parts_for(plan, "runner") == ["volume", "front", "s3", "mount"]
    lone = for_host(new_plan(["c1"], ["r1", "r2"]), "r1", ["runner"])
    assert "s3" not in parts_for(msgspec.structs.replace(lone, s3_gateways=True), "runner")
    progs = {p.name: p.argv for p in programs(plan, "runner", "weed", tmp_path, tmp_path / "m")}
    assert progs["s3"] == [
        "weed", "s3", "-filer=10.0.0.4:7153", "-ip.bind=10.0.0.4", "-port=7154",
        "-port.grpc=17154", "-port.iceberg=0", "-port.lance=0",
    ]  # fmt: skip
    # An older appdata.json (no s3_port) reads with the default port.
    assert msgspec.json.decode(msgspec.json.encode(plan), type=weedplan.WeedPlan).s3_port == 7154


def test_the_front_prefers_the_first_filer() -> None:
    plan = for_host(new_plan(["10.0.0.1"], ["10.0.0.4", "10.0.0.5"], STORE), "10.0.0.5", ["runner"])
    text = weedplan.front_config(plan)
    sections = [
        [ln for ln in block.split("\n") if ln.strip()] for block in text.split("listen ")[1:]
    ]
    grpc, http = ({line.split()[0]: line.split() for line in b} for b in sections)
    assert "filer-grpc" in grpc and grpc["bind"] == ["bind", "10.0.0.5:17153"]
    servers = [line.split() for b in sections for line in b if line.strip().startswith("server")]
    assert servers == [
        ["server", "f0", "10.0.0.1:17152", "check"],
        ["server", "f1", "10.0.0.4:17152", "check", "backup"],
        ["server", "f0", "10.0.0.1:7152", "track", "filer-grpc/f0"],
        ["server", "f1", "10.0.0.4:7152", "track", "filer-grpc/f1", "backup"],
    ]
    assert http["bind"] == ["bind", "10.0.0.5:7153"]
    # Sessions cut when the first fails; not when it is back (a write in
    # flight on the second would fail).
    assert "on-marked-down shutdown-sessions" in text
    assert "on-marked-up" not in text
    with pytest.raises(ValueError, match="two filers"):
        filerfront.config("10.0.0.5", ["10.0.0.1"], 7152)


def test_filer_toml_names_the_store_and_prefers_the_writable_host() -> None:
    two = FilerStore(hosts=["10.0.0.7", "10.0.0.8"], port=5433, password="s3cret_-" * 3)
    text = weedplan.filer_toml(two, Path("/data/weed/filer"))
    assert "leveldb2" not in tomllib.loads(text)
    parsed = tomllib.loads(text)["postgres2"]
    assert parsed["enabled"] is True
    assert parsed["hostname"] == "10.0.0.7,10.0.0.8 target_session_attrs=read-write"
    assert (parsed["port"], parsed["username"], parsed["database"]) == (
        5433, "roost_weed", "roost_weed"
    )  # fmt: skip
    assert parsed["password"] == "s3cret_-" * 3
    assert '"%s"' in parsed["createTable"] and "ON CONFLICT" in parsed["upsertQuery"]
    assert (
        tomllib.loads(weedplan.filer_toml(STORE, Path("/d")))["postgres2"]["hostname"] == "10.0.0.9"
    )
    # Nothing that could end the string or add a setting gets in.
    for bad in (
        msgspec.structs.replace(STORE, password='x" enabled = false'),
        msgspec.structs.replace(STORE, hosts=["h user=postgres"]),
        msgspec.structs.replace(STORE, hosts=[]),
    ):
        with pytest.raises(PlanError):
            weedplan.filer_toml(bad, Path("/d"))


def test_filer_toml_keeps_buckets_out_of_the_apps_names_with_either_store() -> None:
    """Every host mounts the tree's root at ROOT (ROOT/APP each app's tree):
    weed's default /buckets would be an app's. /.buckets can be no app's."""
    from roost.controller.api.deps import APP_NAME

    assert weedplan.BUCKETS_FOLDER.startswith("/.")
    assert not APP_NAME.match(weedplan.BUCKETS_FOLDER.lstrip("/"))
    for store in (STORE, None):
        text = weedplan.filer_toml(store, Path("/var/lib/roost/weed/filer"))
        assert tomllib.loads(text)["filer"]["options"] == {"buckets_folder": "/.buckets"}
    # Without a shared store, the embedded LevelDB where weed's default put it
    # (an existing cluster's filer keeps its tree), and only that store.
    parsed = tomllib.loads(weedplan.filer_toml(None, Path("/var/lib/roost/weed/filer")))
    assert parsed["leveldb2"] == {"enabled": True, "dir": "/var/lib/roost/weed/filer/filerldb2"}
    assert "postgres2" not in parsed
    with pytest.raises(PlanError, match="cannot be quoted"):
        weedplan.filer_toml(None, Path('/x"\n[postgres2]'))


def test_cluster_init_s_store_from_the_state_url() -> None:
    hosts = {"c1": ["controller"], "s1": ["servicehost"], "r1": ["runner"]}
    store = clusterdata.store_for("postgresql+psycopg://roost:pw@10.1.1.1:6543/roost")
    assert store is not None and (store.hosts, store.port) == (["10.1.1.1"], 6543)
    assert len(store.password) >= 24
    shared, _ = clusterdata.plan(hosts, True, store)
    assert shared is not None and shared.filers == ["c1", "s1"] and shared.store == store
    assert "metadata in the state database" in clusterdata.summary(shared)
    # Two filers: a gateway beside every front, apps' buckets in the tree.
    assert shared.s3_gateways
    assert "s3" in parts_for(for_host(shared, "r1", ["runner"]), "runner")
    for sqlite in ("", "sqlite:////var/lib/roost/state.db"):
        assert clusterdata.store_for(sqlite) is None
    lone, _ = clusterdata.plan(hosts, True, None)
    assert lone is not None and "own store" in clusterdata.summary(lone)
    assert not lone.s3_gateways  # one filer: no front, no gateway
    assert "no new file can be written" in clusterdata.summary(lone)  # one master
