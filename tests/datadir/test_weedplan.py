"""Where the shared tree's SeaweedFS processes run, and how (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.cli import clusterdata
from roost.datadir import weedplan
from roost.datadir.weedplan import PlanError, for_host, new_plan, parts_for, programs


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
