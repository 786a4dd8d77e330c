"""DATA/up.json: what `roost up` says of its roles, and waiting for it to be ready."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from roost.cli.main import cli
from roost.cli.readiness import listening
from roost.proc import upstate
from roost.proc.upstate import RoleStatus, UpStatus, down_roles, verdict

CONFIG_EXIT = (
    "exited with a configuration error (78)\n"
    "Traceback (most recent call last):\n"
    "builder: user 'roost-build' cannot reach /root/x/.roost/builder: /root is not searchable"
)


def status(ready: bool = False, over: bool = False, pid: int = 1) -> UpStatus:
    return UpStatus(
        pid=pid,
        ready=ready,
        over=over,
        roles={
            "controller": RoleStatus(state="up", pid=10),
            "builder": RoleStatus(state="backoff", restarts=3, last_error=CONFIG_EXIT),
            "runner": RoleStatus(state="starting", pid=12),
        },
    )


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_down_role_is_named_with_its_reason_and_last_words() -> None:
    assert down_roles(status()) == [
        "builder is backoff (restarted 3 times): exited with a configuration error (78): "
        "builder: user 'roost-build' cannot reach /root/x/.roost/builder: /root is not searchable",
        "runner is starting",
    ]
    assert down_roles(UpStatus(pid=1, roles={"router": RoleStatus(state="up")})) == []


def test_verdict() -> None:
    since = 100.0
    assert verdict(None, since, False) == "wait"
    assert verdict((status(ready=True), 50.0), since, True) == "ready"
    # Ready, but its roost up is gone: an earlier run's file.
    assert verdict((status(ready=True), 50.0), since, False) == "wait"
    # Over: a failure only if written after the waiter started.
    assert verdict((status(over=True), 150.0), since, False) == "failed"
    assert verdict((status(over=True), 50.0), since, False) == "wait"
    assert verdict((status(), 150.0), since, True) == "wait"
    # Killed without a last word, after we started waiting.
    assert verdict((status(), 150.0), since, False) == "failed"


def test_verdict_for_one_roost_up() -> None:
    """A roost up just started where another runs (a take-over): the other's
    ready status is not this one's."""
    other = UpStatus(pid=10, ready=True, roles={})
    assert verdict((other, 50.0), 100.0, True) == "ready"
    assert verdict((other, 50.0), 100.0, True, pid=11) == "wait"
    assert verdict((UpStatus(pid=11, ready=True, roles={}), 150.0), 100.0, True, pid=11) == "ready"


def test_wait_ready_for_a_pid_that_is_gone(tmp_path: Path) -> None:
    upstate.save(tmp_path, status(ready=True, pid=os.getpid()))
    with pytest.raises(upstate.NotReady, match=r"roost up \(pid \d+\) is not running"):
        upstate.wait_ready(tmp_path, 5, pid=dead_pid())
    assert upstate.wait_ready(tmp_path, 5, pid=os.getpid()).ready


def test_wait_ready_reads_the_file(tmp_path: Path) -> None:
    clock = iter(range(1000, 2000)).__next__
    with pytest.raises(upstate.NotReady, match="no roost up is running"):
        upstate.wait_ready(tmp_path, 5, clock=lambda: float(clock()), sleep=lambda _: None)
    upstate.save(tmp_path, status(ready=True, pid=os.getpid()))
    assert upstate.wait_ready(tmp_path, 5).ready
    # Stopped after we began waiting: the failure, with what it said.
    upstate.save(tmp_path, UpStatus(pid=dead_pid(), roles={}, over=True, error="builder failed"))
    with pytest.raises(upstate.NotReady, match="roost up stopped\n  builder failed"):
        upstate.wait_ready(tmp_path, 5, since=0.0)
    # Not ready in time: each role that is not up, and why.
    upstate.save(tmp_path, status(pid=os.getpid()))
    with pytest.raises(upstate.NotReady, match="not ready within 5s\n  builder is backoff"):
        upstate.wait_ready(tmp_path, 5, clock=lambda: float(clock()), sleep=lambda _: None)


def test_status_command(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["--data", str(tmp_path), "status"])
    assert r.exit_code == 3 and "no roost up has run" in r.output
    upstate.save(tmp_path, status(pid=dead_pid()))
    r = CliRunner().invoke(cli, ["--data", str(tmp_path), "status"])
    assert r.exit_code == 1 and "not running" in r.output and "backoff" in r.output
    upstate.save(tmp_path, UpStatus(pid=os.getpid(), ready=True, roles={}))
    r = CliRunner().invoke(cli, ["--data", str(tmp_path), "status", "--wait", "--timeout", "5"])
    assert r.exit_code == 0 and ": ready" in r.output


def test_a_deploy_failure_names_the_local_roles_that_are_down(tmp_path: Path) -> None:
    assert upstate.down_report(tmp_path) == ""
    upstate.save(tmp_path, status(pid=os.getpid()))
    report = upstate.down_report(tmp_path)
    assert "on this machine (roost status):" in report and "builder is backoff" in report
    upstate.save(tmp_path, status(pid=dead_pid()))
    assert upstate.down_report(tmp_path) == ""


async def test_listening_waits_for_every_address() -> None:
    ports = []
    socks = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    try:
        probe = asyncio.ensure_future(listening([("127.0.0.1", p) for p in ports])(None))
        socks[0].listen()
        await asyncio.sleep(0.5)
        assert not probe.done()  # the second one does not listen yet
        socks[1].listen()
        await asyncio.wait_for(probe, 30)
    finally:
        for s in socks:
            s.close()
