"""`roost cluster init/join/admin-token`, without namespaces: the bundles
themselves, what join installs, and the admin token the controller wrote."""

from __future__ import annotations

import io
import json
import stat
import tarfile
import threading
from pathlib import Path

from click.testing import CliRunner

from roost.cli.main import cli
from roost.controller.admintoken import write_admin_token
from roost.controller.bootstrap import bootstrap_admin
from roost.controller.secretbox import FERNET_FILE, legacy_key, read_keys
from roost.controller.store import Store
from roost.state.db import make_engine, migrate, sqlite_url
from roost.wire.bootstrap import open_node
from roost.wire.identity import identity, parse_peers
from roost.wire.keys import generate_keypair

CONTROLLERS = ["10.9.0.1", "10.9.0.2"]
RUNNERS = ["10.9.0.21", "10.9.0.22"]
ROUTER, SERVICEHOST = "10.9.0.31", "10.9.0.41"


def _init(tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "bundles"
    r = CliRunner().invoke(
        cli,
        ["cluster", "init", "--controllers", ",".join(CONTROLLERS),
         "--runners", ",".join(RUNNERS), "--routers", ROUTER, "--servicehosts", SERVICEHOST,
         "--state", "postgresql://roost@10.9.0.1/roost", "--out", str(out), *extra],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return out


def _files(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, mode="r:gz") as tar:
        out = {}
        for m in tar.getmembers():
            fh = tar.extractfile(m)
            assert fh is not None
            out[m.name] = fh.read()
        return out


def _joined(tmp_path: Path, state: str) -> Path:
    out = tmp_path / "bundles"
    args = ["cluster", "init", "--controllers", "10.9.0.1", "--out", str(out)]
    r = CliRunner().invoke(cli, [*args, *(["--state", state] if state else [])])
    assert r.exit_code == 0, r.output
    data = tmp_path / "host" / "data"
    r = CliRunner().invoke(
        cli, ["--data", str(data), "cluster", "join", str(out / "10.9.0.1.tar.gz")]
    )
    assert r.exit_code == 0, r.output
    return data


def test_each_host_bundle_holds_only_its_own_secret_keys(tmp_path: Path) -> None:
    out = _init(tmp_path)
    hosts = [*CONTROLLERS, *RUNNERS, ROUTER, SERVICEHOST]
    bundles = {h: _files(out / f"{h}.tar.gz") for h in hosts}
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{h}.tar.gz" for h in hosts)
    assert all(stat.S_IMODE((out / f"{h}.tar.gz").stat().st_mode) == 0o600 for h in hosts)
    secrets_of: dict[str, set[bytes]] = {
        h: {v.split()[1] for k, v in files.items() if k.endswith(".key_secret")}
        for h, files in bundles.items()
    }
    for host, files in bundles.items():
        peers = parse_peers(files["keys/peers.json"])
        assert len(peers) == 2 + 2 + 2 + 1 + 1  # controller+builder on 2 hosts, 2 runners, ...
        for name, content in files.items():
            if name.endswith(".key_secret"):
                public, _ = content.split()
                assert peers[public].host == host, f"{host}'s bundle holds {peers[public]}'s key"
        others = set().union(*(s for h, s in secrets_of.items() if h != host))
        assert not secrets_of[host] & others
        everything = b"".join(files.values())
        assert not any(secret in everything for secret in others)
    # Every key is a distinct (role, host): no key is shared by two hosts.
    peers = parse_peers(bundles[RUNNERS[0]]["keys/peers.json"])
    assert identity("runner", RUNNERS[1]) in peers.values()
    # appdata.json: its share of the apps' shared tree (a servicehost and
    # two storage hosts make one; datadir/weedplan.py), no secret in it.
    assert sorted(bundles[RUNNERS[0]]) == sorted(
        ["appdata.json", "cluster.json", "keys/peers.json", "keys/runner.key",
         "keys/runner.key_secret"]
    )  # fmt: skip
    assert json.loads(bundles[RUNNERS[0]]["appdata.json"])["host"] == RUNNERS[0]
    assert "appdata.json" not in bundles[ROUTER]
    # The secrets key: controllers only, the same for all of them.
    fernet = {h: f.get(f"keys/{FERNET_FILE}") for h, f in bundles.items()}
    assert fernet[CONTROLLERS[0]] and fernet[CONTROLLERS[0]] == fernet[CONTROLLERS[1]]
    assert all(fernet[h] is None for h in hosts if h not in CONTROLLERS)


def test_join_installs_the_hosts_identity(tmp_path: Path) -> None:
    out = _init(tmp_path)
    data = tmp_path / "run1"
    r = CliRunner().invoke(
        cli, ["--data", str(data), "cluster", "join", str(out / f"{RUNNERS[0]}.tar.gz")]
    )
    assert r.exit_code == 0, r.output
    assert f"as {RUNNERS[0]}: runner" in r.output
    assert (data / "runner" / "host_id").read_text().strip() == RUNNERS[0]
    assert not (data / "keys" / FERNET_FILE).exists()
    assert stat.S_IMODE((data / "keys" / "runner.key_secret").stat().st_mode) == 0o600
    node, cluster = open_node(data, "runner")
    try:
        assert node.identity == identity("runner", RUNNERS[0])
        assert [ep.address for ep in cluster.of("controller")] == [
            f"tcp://{h}:7100" for h in CONTROLLERS
        ]
        # Each controller endpoint carries that host's own controller key.
        keys = {node.identity_of(ep.public_key) for ep in cluster.of("controller")}
        assert keys == {identity("controller", h) for h in CONTROLLERS}
    finally:
        node.close()


def test_join_refuses_a_bundle_whose_secret_is_not_its_hosts(tmp_path: Path) -> None:
    out = _init(tmp_path)
    files = _files(out / f"{RUNNERS[0]}.tar.gz")
    stranger = generate_keypair()
    files["keys/runner.key"] = stranger.public + b"\n"
    files["keys/runner.key_secret"] = stranger.public + b"\n" + stranger.secret + b"\n"
    bad = tmp_path / "bad.tar.gz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    bad.write_bytes(buf.getvalue())
    data = tmp_path / "host"
    r = CliRunner().invoke(cli, ["--data", str(data), "cluster", "join", str(bad)])
    assert r.exit_code == 2 and "not the cluster's runner" in r.output
    assert not (data / "keys" / "runner.key_secret").exists()  # nothing installed


def test_an_older_clusters_key_keeps_its_secrets_readable(tmp_path: Path) -> None:
    old = generate_keypair()
    legacy = tmp_path / "old.tar.gz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        content = old.public + b"\n" + old.secret + b"\n"
        info = tarfile.TarInfo("keys/cluster.key_secret")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    legacy.write_bytes(buf.getvalue())
    out = _init(tmp_path, "--previous", str(legacy))
    data = tmp_path / "ctl"
    r = CliRunner().invoke(
        cli, ["--data", str(data), "cluster", "join", str(out / "10.9.0.1.tar.gz")]
    )
    assert r.exit_code == 0, r.output
    keys = read_keys(data / "keys" / FERNET_FILE)
    assert len(keys) == 2 and keys[1] == legacy_key(old.secret) and keys[0] != keys[1]


def test_admin_token_prints_the_token_the_controller_wrote(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "state.db")
    data = _joined(tmp_path, url)
    # Searchable, not listable: a builder's unprivileged user must reach DATA/builder.
    assert stat.S_IMODE(data.stat().st_mode) == 0o711
    # Before the controller's first start there is none, and no database is touched.
    r = CliRunner().invoke(cli, ["--data", str(data), "cluster", "admin-token"])
    assert r.exit_code == 1 and "start this host's controller" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "state.db").exists()
    # What the controller does at its start (roost.controller.daemon).
    migrate(url)
    store = Store(make_engine(url))
    try:
        token = bootstrap_admin(store, data, "controller")
        r = CliRunner().invoke(cli, ["--data", str(data), "cluster", "admin-token"])
        assert r.exit_code == 0, r.output
        assert r.output.strip() == token
        admin = store.account_by_email("admin@localhost")
        assert admin.is_admin and store.account_for_token(token).id == admin.id
    finally:
        store.engine.dispose()


def test_admin_token_waits_for_a_starting_controller(tmp_path: Path) -> None:
    data = _joined(tmp_path, sqlite_url(tmp_path / "state.db"))
    writer = threading.Timer(0.5, write_admin_token, (data, "rst_written-by-the-controller"))
    writer.start()
    try:
        r = CliRunner().invoke(cli, ["--data", str(data), "cluster", "admin-token", "--wait", "60"])
    finally:
        writer.join()
    assert r.exit_code == 0, r.output
    assert r.output.strip() == "rst_written-by-the-controller"


def test_admin_token_refusals_are_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["--data", str(tmp_path / "nowhere"), "cluster", "admin-token"])
    assert r.exit_code == 2 and "cluster join" in r.output
    out = _init(tmp_path)
    runner = tmp_path / "runner"
    r = CliRunner().invoke(
        cli, ["--data", str(runner), "cluster", "join", str(out / f"{RUNNERS[0]}.tar.gz")]
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["--data", str(runner), "cluster", "admin-token"])
    assert r.exit_code == 2 and "runs no controller" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_backup_hosts_get_their_keys_and_are_in_every_hosts_address_book(tmp_path: Path) -> None:
    backupds = ["10.9.0.51", "10.9.0.52"]
    out = _init(tmp_path, "--backupds", ",".join(backupds), "--gateways", "10.9.0.61")
    for host in backupds:
        files = _files(out / f"{host}.tar.gz")
        assert sorted(files) == sorted(
            ["cluster.json", "keys/peers.json", "keys/backupd.key", "keys/backupd.key_secret"]
        )
    data = tmp_path / "bak1"
    r = CliRunner().invoke(
        cli, ["--data", str(data), "cluster", "join", str(out / f"{backupds[0]}.tar.gz")]
    )
    assert r.exit_code == 0, r.output
    assert f"as {backupds[0]}: backupd" in r.output and "backupd" in r.output.split("Start")[-1]
    # A servicehost admits the backup hosts (as backupd) and finds them in its book.
    node, cluster = open_node(data, "backupd")
    try:
        assert node.identity == identity("backupd", backupds[0])
        assert [ep.address for ep in cluster.of("backupd")] == [f"tcp://{h}:7130" for h in backupds]
        assert [ep.address for ep in cluster.of("gateway")] == ["tcp://10.9.0.61:7140"]
        assert {node.identity_of(ep.public_key) for ep in cluster.of("backupd")} == {
            identity("backupd", h) for h in backupds
        }
    finally:
        node.close()
    bad = ["--backupds", "not an address", "--out", str(tmp_path / "x")]
    r = CliRunner().invoke(cli, ["cluster", "init", "--controllers", "10.9.0.1", *bad])
    assert r.exit_code == 2 and "--backupds" in r.output
