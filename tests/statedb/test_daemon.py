"""`roost statedb`'s set-up, in process: which programs a host runs and the
private files Patroni reads. (The processes themselves run in
tests/cluster/test_statedb_failover.py.)"""

from __future__ import annotations

import json
import os
import pwd
import stat
from pathlib import Path

import msgspec
import pytest

from roost import patroni
from roost.proc.exits import ConfigError
from roost.statedb import daemon
from roost.statedb.plan import STATE_FILE, for_host, new_plan, patroni_config
from roost.sysuser import Account

PLAN = new_plan("roost", ["10.9.0.1", "10.9.0.2", "10.9.0.3"], ["10.9.0.1", "10.9.0.4"])
ME = Account(pwd.getpwuid(os.geteuid()).pw_name, os.geteuid(), os.getegid(), False)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_host_runs_the_parts_its_plan_names(tmp_path: Path) -> None:
    both = daemon.programs(for_host(PLAN, "10.9.0.1"), tmp_path / "a", ME)
    assert [p.name for p in both] == ["etcd", "patroni"]
    assert [p.name for p in daemon.programs(for_host(PLAN, "10.9.0.3"), tmp_path / "b", ME)] == [
        "etcd"
    ]
    assert [p.name for p in daemon.programs(for_host(PLAN, "10.9.0.4"), tmp_path / "c", ME)] == [
        "patroni"
    ]
    # Patroni stops PostgreSQL before it exits: it gets the longer grace.
    assert both[1].policy.stop_grace_s > both[0].policy.stop_grace_s


def test_patronis_files_are_private_and_what_the_plan_renders(tmp_path: Path) -> None:
    home = tmp_path / "statedb"
    plan = for_host(PLAN, "10.9.0.4")
    daemon.programs(plan, home, ME)
    conf = home / "patroni.yml"
    assert json.loads(conf.read_text()) == patroni_config(plan, home, patroni.pg_bin_dir())
    sql = (home / "bootstrap.sql").read_text()
    assert plan.roost_password in sql
    assert _mode(conf) == _mode(home / "bootstrap.sql") == 0o600
    for sub in ("pgdata", "run"):
        assert _mode(home / sub) == 0o700
    assert not (home / "etcd").exists()  # this host runs no etcd member


def test_a_plan_file_that_names_no_host_is_refused(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_bytes(msgspec.json.encode(PLAN))  # the plan, not a host's
    with pytest.raises(ConfigError, match="names no host"):
        daemon.load_plan(tmp_path)
    (tmp_path / STATE_FILE).write_text("{")
    with pytest.raises(ConfigError, match=STATE_FILE):
        daemon.load_plan(tmp_path)
    (tmp_path / STATE_FILE).write_bytes(msgspec.json.encode(for_host(PLAN, "10.9.0.2")))
    assert daemon.load_plan(tmp_path).host == "10.9.0.2"
