"""`roost install` and `roost cluster join --systemd`: systemd units for a host's roles.

The decisions are read from the units as data (roost.cli.install.units); the
files written are checked by systemd's own `systemd-analyze verify`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from roost.cli.install import HANDS_OVER, Plan, Unit, one_host_roles, roost_command, units
from roost.cli.main import cli
from roost.wire.identity import ROLES

ROOST = str(Path(sys.executable).with_name("roost"))  # the venv's, which verify needs to exist


def _plan(**kw: object) -> Plan:
    base: dict[str, object] = {
        "roles": ROLES,
        "data": Path("/var/lib/roost"),
        "roost": (ROOST,),
    }
    base.update(kw)
    return Plan(**base)  # type: ignore[arg-type]


def _by_name(plan: Plan) -> dict[str, Unit]:
    return {u.name: u for u in units(plan)}


def verify(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_restarting_the_runner_or_servicehost_hands_their_tenants_over() -> None:
    got = _by_name(_plan())
    for role in ROLES:
        svc = got[f"roost-{role}.service"]
        assert svc.value("Service", "Restart") == "always"
        assert svc.value("Service", "ExecStart") == f"{ROOST} --data /var/lib/roost {role}"
        assert svc.value("Service", "EnvironmentFile") == "-/etc/roost/roost.env"
        assert svc.values("Unit", "PartOf") == ["roost.target"]
        assert "network-online.target" in " ".join(svc.values("Unit", "After")).split()
        if role in HANDS_OVER:
            # Only the daemon is signalled, and with "hand over": instances,
            # PostgreSQL and Redis stay in the unit's cgroup, running.
            assert svc.value("Service", "KillMode") == "process"
            assert svc.value("Service", "KillSignal") == "SIGUSR2"
        else:
            assert svc.value("Service", "KillMode") == "mixed"
            assert svc.value("Service", "KillSignal") == "SIGTERM"
        # A configuration error is not restarted in a loop (roost.proc.exits.FATAL).
        assert svc.value("Service", "RestartPreventExitStatus") == "69 78"
    assert {"runner", "servicehost"} == HANDS_OVER
    assert got["roost-runner.service"].value("Service", "Delegate") == "yes"


def test_order_servicehost_before_runner_controller_first_router_after_its_sockets() -> None:
    got = _by_name(_plan())

    def after(role: str) -> set[str]:
        return {w for v in got[f"roost-{role}.service"].values("Unit", "After") for w in v.split()}

    assert {"roost-controller.service", "roost-servicehost.service"} <= after("runner")
    assert not any(u.startswith("roost-") for u in after("controller"))
    assert {"roost-router.socket", "roost-router-tls.socket"} <= after("router")
    router = got["roost-router.service"]
    assert router.value("Unit", "Requires") == "roost-router.socket roost-router-tls.socket"
    target = got["roost.target"]
    assert target.value("Unit", "Wants") == " ".join(f"roost-{r}.service" for r in ROLES)
    assert target.value("Install", "WantedBy") == "multi-user.target"
    # The sockets are not part of the target: stopping Roost keeps the ports open.
    for name, fd_name, port in (
        ("roost-router.socket", "http", "127.0.0.1:8080"),
        ("roost-router-tls.socket", "https", "127.0.0.1:8443"),
    ):
        sock = got[name]
        assert sock.value("Socket", "FileDescriptorName") == fd_name  # what the router takes
        assert sock.value("Socket", "ListenStream") == port
        assert sock.value("Socket", "Service") == "roost-router.service"
        assert sock.value("Socket", "ReusePort") == "true"  # joins a self-bound router's port
        assert sock.values("Unit", "PartOf") == []


def test_only_the_roles_asked_in_one_order_and_no_tls_socket_when_tls_is_off() -> None:
    got = _by_name(_plan(roles=("runner", "controller"), tls_port=0))
    assert list(got) == ["roost.target", "roost-controller.service", "roost-runner.service"]
    assert "roost-servicehost.service" not in got["roost-runner.service"].render()
    with_router = _by_name(_plan(roles=("router",), tls_port=0, http_port=80, host="::"))
    assert with_router["roost-router.socket"].value("Socket", "ListenStream") == "[::]:80"
    assert "roost-router-tls.socket" not in with_router
    assert with_router["roost-router.service"].value("Service", "Sockets") == "roost-router.socket"


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"roles": ("runner", "web")}, "unknown roles"),
        ({"roles": ()}, "unknown roles"),
        ({"data": Path("/srv/my roost")}, "data directory"),
        ({"data": Path("relative")}, "data directory"),
        ({"roost": ("/opt/$HOME/roost",)}, "roost command"),
    ],
)
def test_what_a_unit_file_cannot_say_is_refused(kw: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        units(_plan(**kw))


def test_roost_install_writes_units_that_systemd_verifies(tmp_path: Path) -> None:
    assert roost_command() == (ROOST,)
    data, out, env = tmp_path / "data", tmp_path / "units", tmp_path / "etc" / "roost.env"
    args = ["--data", str(data), "install", "--dir", str(out), "--env-file", str(env)]
    r = CliRunner().invoke(cli, [*args, "--roles", ",".join(ROLES)])
    assert r.exit_code == 0, r.output
    files = sorted(out.iterdir())
    assert [f.name for f in files] == sorted(
        [
            "roost.target",
            *(f"roost-{role}.service" for role in ROLES),
            "roost-router.socket",
            "roost-router-tls.socket",
        ]
    )
    done = verify(files)
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stderr.splitlines() if "roost" in line], done.stderr
    assert "systemctl enable --now roost.target roost-router.socket" in r.output
    # The settings file is made once, with the ports, and kept.
    assert "ROOST_ROUTER_PORT=8080" in env.read_text()
    env.write_text("ROOST_ROUTER_PORT=80\n")
    r = CliRunner().invoke(cli, [*args, "--roles", "runner"])
    assert r.exit_code == 0, r.output
    assert env.read_text() == "ROOST_ROUTER_PORT=80\n"


def test_verify_is_a_real_check(tmp_path: Path) -> None:
    unit = units(_plan(roles=("runner",), roost=("/nonexistent/roost",)))[1]
    path = tmp_path / unit.name
    path.write_text(unit.render())
    done = verify([path])
    assert done.returncode != 0 and "/nonexistent/roost" in done.stderr


def test_cluster_join_with_systemd_writes_the_hosts_roles_and_install_finds_them(
    tmp_path: Path,
) -> None:
    out, data, units_dir = tmp_path / "bundles", tmp_path / "data", tmp_path / "units"
    env = tmp_path / "roost.env"
    init = ["cluster", "init", "--controllers", "10.9.0.1", "--runners", "10.9.0.5"]
    init += ["--servicehosts", "10.9.0.5", "--routers", "10.9.0.6", "--out", str(out)]
    r = CliRunner().invoke(cli, init)
    assert r.exit_code == 0, r.output
    join = ["--data", str(data), "cluster", "join", str(out / "10.9.0.5.tar.gz"), "--systemd"]
    join += ["--systemd-dir", str(units_dir), "--env-file", str(env)]
    r = CliRunner().invoke(cli, join)
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in units_dir.iterdir())
    assert names == ["roost-runner.service", "roost-servicehost.service", "roost.target"]
    runner = (units_dir / "roost-runner.service").read_text()
    assert f"--data {data} runner" in runner and "KillSignal=SIGUSR2" in runner
    done = verify(sorted(units_dir.iterdir()))
    assert done.returncode == 0, done.stderr
    # roost install without --roles: the roles this host holds keys for.
    again = tmp_path / "again"
    r = CliRunner().invoke(
        cli, ["--data", str(data), "install", "--dir", str(again), "--env-file", str(env)]
    )
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in again.iterdir()) == names


def test_install_on_a_fresh_data_directory_prepares_it_as_roost_up_would(tmp_path: Path) -> None:
    data, out, env = tmp_path / "data", tmp_path / "units", tmp_path / "roost.env"
    args = ["--data", str(data), "install", "--dir", str(out), "--env-file", str(env)]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert all((data / "keys" / f"{role}.key_secret").is_file() for role in ROLES)
    assert (data / "cluster.json").is_file() and (data / "api.json").is_file()
    services = sorted(p.name for p in out.iterdir() if p.suffix == ".service")
    assert services == sorted(f"roost-{role}.service" for role in one_host_roles())
    cluster = (data / "cluster.json").read_bytes()
    r = CliRunner().invoke(cli, [*args, "--dir", str(tmp_path / "again")])
    assert r.exit_code == 0, r.output
    assert (data / "cluster.json").read_bytes() == cluster  # a used directory is left as it is
    assert sorted(p.name for p in (tmp_path / "again").glob("*.service")) == services


def test_a_controller_hosts_sentinel_gets_a_unit_that_hands_over_and_systemd_verifies(
    tmp_path: Path,
) -> None:
    # Two servicehosts make pairs: every servicehost and controller bundle
    # carries the sentinel password; a controller host runs `roost sentinel`.
    out, units_dir, env = tmp_path / "bundles", tmp_path / "units", tmp_path / "roost.env"
    init = ["cluster", "init", "--controllers", "10.9.0.1", "--runners", "10.9.0.5"]
    init += ["--servicehosts", "10.9.0.5,10.9.0.6", "--routers", "10.9.0.7", "--out", str(out)]
    r = CliRunner().invoke(cli, init)
    assert r.exit_code == 0, r.output
    data = tmp_path / "ctl"
    join = ["--data", str(data), "cluster", "join", str(out / "10.9.0.1.tar.gz"), "--systemd"]
    join += ["--systemd-dir", str(units_dir), "--env-file", str(env)]
    r = CliRunner().invoke(cli, join)
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in units_dir.iterdir())
    assert {"roost-controller.service", "roost-sentinel.service", "roost.target"} <= set(names)
    unit = _by_name(_plan(roles=("controller", "sentinel"), data=data))["roost-sentinel.service"]
    assert unit.value("Service", "ExecStart") == f"{ROOST} --data {data} sentinel"
    # A restart leaves redis-sentinel running for the next daemon to adopt.
    assert unit.value("Service", "KillMode") == "process"
    assert unit.value("Service", "KillSignal") == "SIGUSR2"
    assert "roost-sentinel.service" in (units_dir / "roost.target").read_text()
    done = verify(sorted(units_dir.iterdir()))
    assert done.returncode == 0, done.stderr
    # roost install without --roles finds the sentinel too.
    again = tmp_path / "again"
    r = CliRunner().invoke(
        cli, ["--data", str(data), "install", "--dir", str(again), "--env-file", str(env)]
    )
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in again.iterdir()) == names
    # A servicehost runs its own sentinel: no unit of that name there.
    sh, sh_units = tmp_path / "sh", tmp_path / "sh-units"
    join = ["--data", str(sh), "cluster", "join", str(out / "10.9.0.6.tar.gz"), "--systemd"]
    join += ["--systemd-dir", str(sh_units), "--env-file", str(env)]
    r = CliRunner().invoke(cli, join)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in sh_units.iterdir()) == [
        "roost-servicehost.service",
        "roost.target",
    ]
