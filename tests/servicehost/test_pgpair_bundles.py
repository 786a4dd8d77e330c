"""`roost cluster init` with servicehosts and an etcd: the servicehost pairs
(issue 16). Two by two in the order named, an odd last one a spare; each
pair's servicehosts carry its plan (pgpair.json, with its passwords),
cluster.json names the pairs without secrets, join installs the plan. No
processes."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from roost.cli.client import EXIT_USAGE
from roost.cli.main import cli
from roost.servicehost.pgpair import PAIR_FILE, PROXY_PORT_BASE, PairPlan, plan_pairs
from roost.statedb.plan import STATE_FILE, StateDbPlan
from roost.wire.cluster import ClusterConfig

CONTROLLERS = ["10.9.0.1", "10.9.0.2", "10.9.0.3"]
SERVICEHOSTS = ["10.9.0.41", "10.9.0.42", "10.9.0.43", "10.9.0.44", "10.9.0.45"]


def _init(out: Path, *extra: str) -> tuple[int, str]:
    r = CliRunner().invoke(
        cli,
        ["cluster", "init", "--controllers", CONTROLLERS[0], "--runners", "10.9.0.21",
         "--out", str(out), *extra],
    )  # fmt: skip
    return r.exit_code, r.output


def _files(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_servicehosts_pair_up_two_by_two_in_the_order_named() -> None:
    pairs, spare = plan_pairs(SERVICEHOSTS, CONTROLLERS)
    assert [(p.name, p.hosts, p.proxy_port) for p in pairs] == [
        ("pair-1", SERVICEHOSTS[:2], PROXY_PORT_BASE),
        ("pair-2", SERVICEHOSTS[2:4], PROXY_PORT_BASE + 1),
    ]
    assert spare == SERVICEHOSTS[4:]
    assert pairs[0].superuser_password != pairs[1].superuser_password
    assert plan_pairs(SERVICEHOSTS[:1], CONTROLLERS) == ([], SERVICEHOSTS[:1])


def test_etcd_hosts_alone_make_the_pairs_and_each_servicehost_carries_its_plan(
    tmp_path: Path,
) -> None:
    out = tmp_path / "b"
    etcd = [CONTROLLERS[0], *SERVICEHOSTS[:2]]
    code, output = _init(
        out, "--state", "postgresql://roost@10.9.0.9/roost",
        "--servicehosts", ",".join(SERVICEHOSTS[:3]), "--etcd-hosts", ",".join(etcd),
    )  # fmt: skip
    assert code == 0, output
    assert "pair-1: 10.9.0.41 and 10.9.0.42" in output
    assert "10.9.0.43: a spare" in output
    config = msgspec.json.decode(
        _files(out / f"{CONTROLLERS[0]}.tar.gz")["cluster.json"], type=ClusterConfig
    )
    assert [(p.name, p.hosts, p.proxy_port) for p in config.pairs] == [
        ("pair-1", SERVICEHOSTS[:2], PROXY_PORT_BASE)
    ]
    assert b"password" not in _files(out / f"{CONTROLLERS[0]}.tar.gz")["cluster.json"]
    plans = {}
    for host in SERVICEHOSTS[:2]:
        files = _files(out / f"{host}.tar.gz")
        plans[host] = msgspec.json.decode(files[PAIR_FILE], type=PairPlan)
        assert plans[host].host == host and plans[host].etcd == etcd
        # etcd alone here: no Patroni of the state database, no secrets of it.
        state = msgspec.json.decode(files[STATE_FILE], type=StateDbPlan)
        assert state.patroni == [] and not state.superuser_password
    a, b = plans.values()
    assert a.superuser_password == b.superuser_password and a.superuser_password
    assert PAIR_FILE not in _files(out / "10.9.0.43.tar.gz")  # the spare
    assert PAIR_FILE not in _files(out / "10.9.0.21.tar.gz")
    # join installs the plan; it is this host's.
    data = tmp_path / "data"
    r = CliRunner().invoke(
        cli, ["--data", str(data), "cluster", "join", str(out / f"{SERVICEHOSTS[1]}.tar.gz")]
    )
    assert r.exit_code == 0, r.output
    joined = msgspec.json.decode((data / PAIR_FILE).read_bytes(), type=PairPlan)
    assert joined.host == SERVICEHOSTS[1]
    assert (data / PAIR_FILE).stat().st_mode & 0o077 == 0


def test_without_an_etcd_two_servicehosts_keep_their_own_postgresql(tmp_path: Path) -> None:
    out = tmp_path / "b"
    code, output = _init(
        out, "--state", "postgresql://roost@10.9.0.9/roost",
        "--servicehosts", ",".join(SERVICEHOSTS[:2]),
    )  # fmt: skip
    assert code == 0, output
    assert "pairs of PostgreSQL need an etcd" in output
    for host in SERVICEHOSTS[:2]:
        assert PAIR_FILE not in _files(out / f"{host}.tar.gz")
    config = msgspec.json.decode(_files(out / f"{host}.tar.gz")["cluster.json"], type=ClusterConfig)
    assert config.pairs == []


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--etcd-hosts", ",".join(CONTROLLERS)], "two servicehosts or more"),
        (["--servicehosts", ",".join(SERVICEHOSTS[:2]), "--etcd-hosts", "10.9.0.1,10.9.0.2"],
         "odd number"),
    ],
)  # fmt: skip
def test_an_etcd_that_cannot_serve_is_refused_and_nothing_written(
    tmp_path: Path, extra: list[str], says: str
) -> None:
    out = tmp_path / "b"
    code, output = _init(out, "--state", "postgresql://roost@10.9.0.9/roost", *extra)
    assert code == EXIT_USAGE, output
    assert says in output
    assert not out.exists()


def test_a_bundle_whose_pair_plan_is_another_hosts_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "b"
    code, output = _init(
        out, "--state", "postgresql://roost@10.9.0.9/roost",
        "--servicehosts", ",".join(SERVICEHOSTS[:2]),
        "--etcd-hosts", ",".join([CONTROLLERS[0], *SERVICEHOSTS[:2]]),
    )  # fmt: skip
    assert code == 0, output
    files = _files(out / f"{SERVICEHOSTS[0]}.tar.gz")
    files[PAIR_FILE] = _files(out / f"{SERVICEHOSTS[1]}.tar.gz")[PAIR_FILE]
    forged = tmp_path / "forged.tar.gz"
    with tarfile.open(forged, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    data = tmp_path / "data"
    r = CliRunner().invoke(cli, ["--data", str(data), "cluster", "join", str(forged)])
    assert r.exit_code == EXIT_USAGE, r.output
    assert "pgpair.json is not this servicehost's" in r.output
    assert not (data / PAIR_FILE).exists()
