"""Tightening a data directory an older version left open (roost.daemonize)."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from pathlib import Path

import pytest

from roost.daemonize import run_daemon, tighten_data_dir, tightened
from roost.proc.exits import ConfigError, ExitCode


def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def test_tightened_only_removes_bits() -> None:
    assert tightened(0o100644, 0o600) == 0o600
    assert tightened(0o100600, 0o600) is None
    assert tightened(0o100400, 0o600) is None  # stricter already: left alone
    assert tightened(0o40755, 0o711) == 0o711
    assert tightened(0o40700, 0o711) is None  # never adds the x bits
    assert tightened(0o104755, 0o700) == 0o700  # setuid goes too


def test_an_older_data_directory_is_tightened_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    os.chmod(data, 0o755)
    os.chmod(data / "keys", 0o755)
    for rel in ("keys/controller.key", "keys/controller.key_secret", "api.json",
                "cluster.json", "state.db", "state.db-wal", "metrics.json"):  # fmt: skip
        (data / rel).write_text("x")
        os.chmod(data / rel, 0o644)
    outside = tmp_path / "elsewhere"
    outside.write_text("not ours")
    os.chmod(outside, 0o644)
    (data / "router").symlink_to(outside)  # a chmod must not follow it out of DATA

    changed = tighten_data_dir(data)

    assert {p.relative_to(data).as_posix() for p, _, _ in changed} == {
        ".", "keys", "keys/controller.key", "keys/controller.key_secret", "api.json",
        "cluster.json", "state.db", "state.db-wal",
    }  # fmt: skip
    assert mode(data) == 0o711 and mode(data / "keys") == 0o700
    for rel in ("keys/controller.key_secret", "api.json", "cluster.json", "state.db-wal"):
        assert mode(data / rel) == 0o600
    assert mode(data / "metrics.json") == 0o644  # not a secret: left as it was
    assert mode(outside) == 0o644
    assert tighten_data_dir(data) == []  # idempotent


def test_a_daemon_exits_with_the_status_its_error_names(capsys: pytest.CaptureFixture[str]) -> None:
    async def unreachable(stop: asyncio.Event) -> None:
        # As a TaskGroup wraps it: the configuration error still decides.
        async with asyncio.TaskGroup() as tg:
            tg.create_task(asyncio.sleep(60))
            raise ConfigError("user 'roost-build' cannot reach /x (chmod o+x /x)")

    with pytest.raises(SystemExit) as ended:
        run_daemon("builder", unreachable)
    assert ended.value.code == ExitCode.CONFIG_ERROR
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "builder: user 'roost-build' cannot reach /x (chmod o+x /x)"

    async def bug(stop: asyncio.Event) -> None:
        raise RuntimeError("boom")

    with pytest.raises(SystemExit) as ended:
        run_daemon("router", bug)
    assert ended.value.code == ExitCode.SOFTWARE
    assert capsys.readouterr().err.strip().splitlines()[-1] == "router: RuntimeError: boom"

    async def stops(stop: asyncio.Event) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # only sets `stop`
        await stop.wait()

    run_daemon("runner", stops)  # returns: exit status 0
