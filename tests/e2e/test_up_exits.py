"""`roost up` stops at a role's configuration error instead of restarting it forever.

Through the real `roost up`: a setting the runner and the builder refuse
(ROOST_FIREWALL=maybe) passes `roost up`'s own checks, so the roles find it
out: the first to exit CONFIG_ERROR (roost.proc.exits) with a message naming
the fix ends supervision, every role is stopped, and `roost up` exits with
that status and that message, at once, never restarting the role.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from roost.proc.exits import ExitCode
from tests.conftest import free_port, processes_under

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("setting", "value", "says", "roles"),
    [
        (
            "ROOST_FIREWALL",
            "maybe",
            "ROOST_FIREWALL must be 'on' or 'off', not 'maybe'",
            ("builder", "runner"),
        ),
        # Only the builder runs build steps: an interpreter it cannot run is
        # the operator's to fix, not a crash to retry.
        (
            "ROOST_BUILD_PYTHON",
            "/nonexistent/python3",
            "(set ROOST_BUILD_PYTHON)",
            ("builder",),
        ),
    ],
)
def test_a_role_with_a_configuration_error_stops_roost_up_with_its_message(
    setting: str, value: str, says: str, roles: tuple[str, ...]
) -> None:
    base = Path(tempfile.mkdtemp(prefix="roost-up-exits-"))
    base.chmod(0o755)  # the build and service users reach the data directory
    data = base / "data"
    try:
        argv = [sys.executable, "-m", "roost", "--data", str(data), "up"]
        for option in ("--api-port", "--router-port", "--tls-port", "--ssh-port"):
            argv += [option, str(free_port())]
        env = dict(os.environ, **{setting: value})
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == ExitCode.CONFIG_ERROR, r.stderr[-3000:]
        # The last words: which role, why, and the setting to fix.
        tail = "\n".join(r.stderr.strip().splitlines()[-3:])
        assert "exited with status 78 (CONFIG_ERROR)" in tail, r.stderr[-3000:]
        assert says in tail, r.stderr[-3000:]
        # Given up at once: the roles that refused the setting are never retried.
        retried = [
            line
            for line in r.stderr.splitlines()
            if line.startswith(tuple(f"roost up: {role}" for role in roles))
            and "restarting in" in line
        ]
        assert retried == [], r.stderr[-3000:]
        assert processes_under(data) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)
