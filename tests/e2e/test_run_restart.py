"""A `run` session outlives its runner (issue 20): `ssh ... run APP CMD`
goes on while the runner daemon is SIGKILLed and `roost up` starts another.
The new runner adopts the session from its shim (on the port its
predecessor had), the gateway's next poll carries on from what it had
relayed, and the client sees every line once, in order, and the command's
exit status."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, wait_until
from tests.e2e.platform import Platform, running_platform

pytestmark = pytest.mark.e2e

COUNT = 80
JOB = f"i=0; while [ $i -lt {COUNT} ]; do echo tick $i; i=$((i+1)); sleep 0.1; done; exit 5"
SSH_OPTS: tuple[str, ...] = ("-o", "StrictHostKeyChecking=no", "-o", "LogLevel=ERROR")
SSH_OPTS += ("-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes")
TARGET = ("vcs@127.0.0.1", "run", "counting")


def test_a_run_session_carries_on_across_a_killed_runner(tmp_path: Path) -> None:
    with running_platform() as p:
        carry_on(p, tmp_path)


def carry_on(p: Platform, tmp_path: Path) -> None:
    app_dir = tmp_path / "counting"
    shutil.copytree(REPO / "examples" / "hello", app_dir)
    p.roost("apps", "create", "counting")
    r = p.roost("deploy", str(app_dir), "--app", "counting")
    assert "is live" in r.stdout, r.stdout
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    p.roost("keys", "add", str(key.with_suffix(".pub")))
    ssh = subprocess.Popen(
        ["ssh", "-p", str(p.ssh_port), "-i", str(key), "-T", *SSH_OPTS, *TARGET, JOB],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert ssh.stdout is not None
        lines: list[str] = []
        while len(lines) < 10:
            line = ssh.stdout.readline()
            assert line, f"the session ended early: {lines}"
            lines.append(line.strip())
        old_runner = p.role_pid("runner")
        os.kill(old_runner, signal.SIGKILL)
        wait_until(lambda: p.role_pid("runner") not in (0, old_runner), 60, "a new runner")
        lines += [line.strip() for line in ssh.stdout]
        status = ssh.wait(timeout=120)
    finally:
        if ssh.poll() is None:
            ssh.kill()
            ssh.wait()
    assert lines == [f"tick {i}" for i in range(COUNT)]
    assert status == 5
    # Through the new runner, which adopted it (not a second run: one count).
    assert re.search(
        r"runner\[\d+\] INFO roost.runner: counting: run run-\w+ adopted", p.log.read_text()
    )
