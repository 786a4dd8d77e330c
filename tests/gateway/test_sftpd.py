"""The servicehost's SFTP server (roost.servicehost.sftpd) driven by the real
OpenSSH sftp and scp clients over a pipe (`-S` runs it in place of ssh):
transfers work, and nothing outside the listed apps' directories is reachable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not (shutil.which("sftp") and shutil.which("scp")), reason="needs the OpenSSH client"
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "appdata"
    (r / "mine").mkdir(parents=True)
    (r / "theirs").mkdir()
    (r / "theirs" / "secret.txt").write_text("not for you\n")
    (r / "mine" / "etc").symlink_to("/etc")
    (r / "mine" / "peek").symlink_to(r / "theirs")
    return r


@pytest.fixture
def rsh(tmp_path: Path, root: Path) -> Path:
    script = tmp_path / "fake-ssh"
    script.write_text(
        "#!/bin/sh\n"
        f"exec '{sys.executable}' -m roost.servicehost.sftpd '{root}' "
        f"{os.getuid()} {os.getgid()} mine\n"
    )
    script.chmod(0o755)
    return script


def _sftp(rsh: Path, commands: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sftp", "-S", str(rsh), "-b", "-", "host"],
        input=commands,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _scp(rsh: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["scp", "-S", str(rsh), *args], capture_output=True, text=True, timeout=60
    )


def test_transfers_and_directories(rsh: Path, root: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f.bin").write_bytes(os.urandom(600_000))
    (src / "top.txt").write_text("top\n")
    assert _scp(rsh, "-r", str(src), "host:mine/up").returncode == 0
    assert (root / "mine" / "up" / "d" / "f.bin").read_bytes() == (src / "d" / "f.bin").read_bytes()
    back = tmp_path / "back"
    assert _scp(rsh, "-r", "host:/mine/up", str(back)).returncode == 0
    assert (back / "d" / "f.bin").read_bytes() == (src / "d" / "f.bin").read_bytes()

    r = _sftp(rsh, "ls /\ncd mine/up\nmkdir n\nrename top.txt n/t.txt\nls n\nrm n/t.txt\nrmdir n\n")
    assert r.returncode == 0, r.stderr
    assert "mine" in r.stdout and "theirs" not in r.stdout
    assert not (root / "mine" / "up" / "n").exists()


def test_nothing_outside_is_reachable(rsh: Path, root: Path, tmp_path: Path) -> None:
    for remote in ("host:mine/etc/passwd", "host:mine/peek/secret.txt", "host:theirs/secret.txt",
                   "host:/etc/passwd", "host:mine/../theirs/secret.txt"):  # fmt: skip
        r = _scp(rsh, remote, str(tmp_path / "got"))
        assert r.returncode != 0 and not (tmp_path / "got").exists(), remote
    f = tmp_path / "f"
    f.write_text("x")
    for remote in ("host:mine/etc/evil", "host:mine/peek/evil", "host:theirs/evil", "host:/evil"):
        assert _scp(rsh, str(f), remote).returncode != 0, remote
    assert not (root / "theirs" / "evil").exists() and not (root / "evil").exists()
    r = _sftp(rsh, "symlink /etc/passwd mine/pw\n")
    assert r.returncode != 0 and not (root / "mine" / "pw").exists()
    r = _sftp(rsh, "rmdir mine\n")
    assert r.returncode != 0 and (root / "mine").is_dir()
