"""Test set-up: OpenSSH's client and git over it against a gateway on
loopback, with one key and no host key check (each test's gateway has a
host key of its own, never seen before)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def ssh_opts(key: Path) -> list[str]:
    return [
        "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
    ]  # fmt: skip


def git_env(port: int, key: Path) -> dict[str, str]:
    """The environment in which git reaches the gateway on `port` with `key`."""
    return {**os.environ, "GIT_SSH_COMMAND": " ".join(["ssh", *ssh_opts(key), "-p", str(port)])}


def git_over_ssh(repo: Path, port: int, key: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`git ARGS` in `repo`, reaching the gateway on `port` with `key`."""
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        env=git_env(port, key),
        capture_output=True,
        text=True,
        timeout=600,
    )
