"""Rendering one run of an instance: argv, environment, cwd (pure)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from roost.appspec.model import AppSpec, ProcessSpec
from roost.runner.launch import LaunchError, render
from tests.runner.helpers import assignment

SPEC = AppSpec(
    processes={
        "web": ProcessSpec(name="web", kind="wsgi", entrypoint="app:app", web=True),
        "worker": ProcessSpec(
            name="worker", kind="command", command="python work.py --port %(port)s"
        ),
    },
    env={"MODE": "spec", "SHARED": "from-spec"},
)
ROOT = Path("/cache/images/abc")
DATA = Path("/data/runner/apps/demo/data")


def test_wsgi_instance_binds_socket_and_port_with_config_vars_winning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROOST_SECRET_OF_THE_RUNNER", "x")
    a = assignment("i1", spec=SPEC, env={"SHARED": "from-config", "DATABASE_URL": "postgres://db"})
    launch = render(
        a,
        process_name="web.1",
        image_root=ROOT,
        data_directory=DATA,
        port=5001,
        unix_sock="/s/i1.sock",
    )
    assert launch.argv[:3] == [str(ROOT / "venv/bin/python"), "-m", "gunicorn"]
    assert "unix:/s/i1.sock" in launch.argv and "127.0.0.1:5001" in launch.argv
    assert launch.web and launch.probe_host == "127.0.0.1"
    assert launch.cwd == (ROOT / "app").resolve()
    env = launch.env
    assert env["PORT"] == "5001" and env["ROOST_UNIX_SOCK"] == "/s/i1.sock"
    assert (
        env["SHARED"] == "from-config"
        and env["MODE"] == "spec"
        and env["DATABASE_URL"] == "postgres://db"
    )
    assert (
        env["ROOST_PROCESS"] == "web.1"
        and env["ROOST_INSTANCE_ID"] == "i1"
        and env["ROOST_RELEASE"] == "1"
    )
    assert env["PATH"].startswith(str(ROOT / "venv/bin") + os.pathsep)
    assert env["ROOST_DATA_DIR"] == str(DATA)
    assert "ROOST_SECRET_OF_THE_RUNNER" not in env


def test_wsgi_instance_is_probed_where_it_binds() -> None:
    # On a cluster host gunicorn binds the host's address; a probe of
    # 127.0.0.1 would never get an answer there.
    launch = render(
        assignment("i2", spec=SPEC),
        process_name="web.1",
        image_root=ROOT,
        data_directory=DATA,
        port=5002,
        unix_sock="/s/i2.sock",
        bind_host="10.0.0.5",
    )
    assert "10.0.0.5:5002" in launch.argv and launch.probe_host == "10.0.0.5"


def test_command_instance_gets_a_port_but_no_socket() -> None:
    a = assignment("w1", process_type="worker", spec=SPEC)
    launch = render(
        a,
        process_name="worker.1",
        image_root=ROOT,
        data_directory=DATA,
        port=6000,
        unix_sock="/s/w1.sock",
        bind_host="10.0.0.5",
    )
    assert launch.argv == ["/bin/sh", "-c", "exec python work.py --port 6000"]
    assert launch.env["PORT"] == "6000" and "ROOST_UNIX_SOCK" not in launch.env
    assert not launch.web and launch.probe_host == "10.0.0.5"
    assert launch.command == "/bin/sh -c 'exec python work.py --port 6000'"


def test_unknown_process_type_is_refused() -> None:
    with pytest.raises(LaunchError, match="release 1 has no process type 'clock'"):
        render(
            assignment("c", process_type="clock", spec=SPEC),
            process_name="clock.1",
            image_root=ROOT,
            data_directory=DATA,
            port=1,
            unix_sock="",
        )


def test_bundle_config_and_data_symlinks() -> None:
    spec = AppSpec(
        processes=SPEC.processes,
        symlinks={"static/media": "%(data_directory)s/media", "conf": "settings/prod.py"},
    )
    a = assignment("i1", spec=spec, env={"DATABASE_URL": "postgres://u:p%40ss@db.local:5433/demo"})
    bundle = Path("/data/runner/apps/demo/bundle/i1")
    launch = render(
        a,
        process_name="web.1",
        image_root=ROOT,
        data_directory=DATA,
        port=1,
        unix_sock="",
        bundle_config_dir=bundle,
    )
    assert launch.env["PYTHONPATH"].split(os.pathsep)[0] == str(bundle)
    namespace: dict[str, object] = {}
    exec(launch.bundle_config, namespace)
    config = namespace["config"]
    assert config["postgres"] == {  # type: ignore[index]
        "host": "db.local",
        "port": 5433,
        "username": "u",
        "password": "p@ss",
        "database": "demo",
    }
    assert config["core"]["data_directory"] == str(DATA) and "redis" not in config  # type: ignore[index,operator]
    # Only the link into the data directory is the runner's to make.
    assert launch.symlinks == ((ROOT / "app/static/media", DATA / "media"),)


def test_symlink_outside_the_checkout_is_refused() -> None:
    spec = AppSpec(processes=SPEC.processes, symlinks={"../../etc/x": "%(data_directory)s/x"})
    with pytest.raises(LaunchError, match="outside the app checkout"):
        render(
            assignment("i1", spec=spec),
            process_name="web.1",
            image_root=ROOT,
            data_directory=DATA,
            port=1,
            unix_sock="",
        )
