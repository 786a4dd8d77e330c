"""`roost cluster init --state-hosts`: what each host's bundle holds for the
state database, what join installs, and what is refused. No processes."""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path

import msgspec
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from roost.cli.main import cli
from roost.proc.exits import ExitCode
from roost.statedb.plan import STATE_FILE, StateDbPlan
from roost.wire.cluster import ClusterConfig

CONTROLLERS = ["10.9.0.1", "10.9.0.2", "10.9.0.3"]
DEDICATED = "10.9.0.50"  # runs the standby and nothing else
STATE_HOSTS = [CONTROLLERS[0], DEDICATED]


def _invoke(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.output


def _init(out: Path, *extra: str) -> tuple[int, str]:
    return _invoke(
        "cluster", "init", "--controllers", ",".join(CONTROLLERS),
        "--runners", "10.9.0.21", "--out", str(out), *extra,
    )  # fmt: skip


def _files(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_state_hosts_bundles_carry_the_plan_and_secrets_only_where_patroni_runs(
    tmp_path: Path,
) -> None:
    out = tmp_path / "bundles"
    code, output = _init(out, "--state-hosts", ",".join(STATE_HOSTS))
    assert code == 0, output
    plans = {}
    for host in [*CONTROLLERS, DEDICATED]:
        files = _files(out / f"{host}.tar.gz")
        plans[host] = msgspec.json.decode(files[STATE_FILE], type=StateDbPlan)
        config = msgspec.json.decode(files["cluster.json"], type=ClusterConfig)
        u = make_url(config.state_url)
        assert u.query["host"] == ",".join(STATE_HOSTS)
        assert u.query["target_session_attrs"] == "read-write"
        if host == DEDICATED:  # no daemon's key: it runs only the state database's part
            assert not [name for name in files if name.endswith(".key_secret")]
    assert "10.9.0.21" not in [p.host for p in plans.values()]
    assert STATE_FILE not in _files(out / "10.9.0.21.tar.gz")
    for host, plan in plans.items():
        assert plan.host == host
        assert plan.etcd == CONTROLLERS and plan.patroni == STATE_HOSTS
        assert bool(plan.superuser_password) == (host in STATE_HOSTS)
    # One set of passwords for the pair; the controllers' is the URL's.
    assert plans[CONTROLLERS[0]].replication_password == plans[DEDICATED].replication_password
    config = msgspec.json.decode(
        _files(out / f"{CONTROLLERS[1]}.tar.gz")["cluster.json"], type=ClusterConfig
    )
    assert make_url(config.state_url).password == plans[DEDICATED].roost_password
    # Where the controllers ask which member is the primary (controller/stateorder.py).
    assert config.state_rest_port == plans[DEDICATED].rest_port == 8008


def test_an_address_book_without_the_rest_port_still_reads(tmp_path: Path) -> None:
    """One written before it was recorded (or with --state: not Patroni's):
    0, and a controller probes PostgreSQL's port only."""
    old = b'{"name": "roost", "state_url": "postgresql+psycopg://roost:x@/roost?host=a,b"}'
    (tmp_path / "cluster.json").write_bytes(old)
    assert ClusterConfig.load(tmp_path / "cluster.json").state_rest_port == 0
    out = tmp_path / "bundles"
    code, output = _init(out, "--state", "postgresql+psycopg://roost:x@/roost?host=a,b")
    assert code == 0, output
    config = msgspec.json.decode(
        _files(out / f"{CONTROLLERS[0]}.tar.gz")["cluster.json"], type=ClusterConfig
    )
    assert config.state_rest_port == 0


def test_join_installs_a_state_only_host(tmp_path: Path) -> None:
    out = tmp_path / "bundles"
    assert _init(out, "--state-hosts", ",".join(STATE_HOSTS))[0] == 0
    data = tmp_path / "host" / "data"
    code, output = _invoke("--data", str(data), "cluster", "join", str(out / f"{DEDICATED}.tar.gz"))
    assert code == 0, output
    assert f"as {DEDICATED}: statedb" in output
    assert " ".join(output.split()).endswith(f"roost --data {data} statedb")
    assert stat.S_IMODE((data / STATE_FILE).stat().st_mode) == 0o600
    assert msgspec.json.decode((data / STATE_FILE).read_bytes(), type=StateDbPlan).host == DEDICATED


def test_a_bundle_whose_plan_names_another_host_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "bundles"
    assert _init(out, "--state-hosts", ",".join(STATE_HOSTS))[0] == 0
    files = _files(out / f"{CONTROLLERS[1]}.tar.gz")
    files[STATE_FILE] = _files(out / f"{CONTROLLERS[2]}.tar.gz")[STATE_FILE]
    forged = tmp_path / "forged.tar.gz"
    with tarfile.open(forged, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    code, output = _invoke("--data", str(tmp_path / "d"), "cluster", "join", str(forged))
    assert code != 0 and "is not this host's" in output
    assert not (tmp_path / "d" / STATE_FILE).exists()


def test_what_cannot_make_a_state_database_is_refused_with_a_reason(tmp_path: Path) -> None:
    out = tmp_path / "bundles"
    code, output = _init(out, "--state-hosts", CONTROLLERS[0])
    assert code != 0 and "two hosts" in output
    code, output = _init(out, "--state-hosts", ",".join(STATE_HOSTS), "--state", "postgresql://x/y")
    assert code != 0 and "both name" in output
    code, output = _init(
        out, "--state-hosts", ",".join(STATE_HOSTS), "--etcd-hosts", "10.9.0.1,10.9.0.2"
    )
    assert code != 0 and "odd number" in output
    code, output = _init(out, "--etcd-hosts", ",".join(CONTROLLERS))
    assert code != 0 and "goes with --state-hosts" in output
    assert not out.exists()


def test_statedb_without_a_plan_says_what_to_do(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    r = CliRunner().invoke(cli, ["--data", str(data), "statedb"])
    assert r.exit_code == ExitCode.CONFIG_ERROR
    assert "--state-hosts" in r.output
