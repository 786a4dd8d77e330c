"""Issue 17: each app's live data directory is its own user's, so the sftp
server reaches each app's tree as that app's user (roost.servicehost.sftpd's
hats), and rsync/scp run as it. Driven by the real OpenSSH sftp client over
a pipe; needs root (the server changes users as the platform's would)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.servicehost.datasession import app_users, build_argv
from roost.servicehost.sftpd import parse_apps
from roost.tenant.identity import APP_UID_BASE, identity_for
from roost.wire.messages import DataStart

A_UID, B_UID, NOBODY = APP_UID_BASE + 99_999_001, APP_UID_BASE + 99_999_002, 65534


def test_sessions_run_as_each_apps_user() -> None:
    one = DataStart(session="s", app="files", tool="rsync", paths=["."], app_id=7)
    assert app_users(one) == {"files": identity_for(7, "files").uid}
    older = DataStart(session="s", app="files", tool="rsync", paths=["."])
    assert app_users(older) == {}  # an older gateway: the tools' user, as before
    sftp = DataStart(session="s", app="", tool="sftp", apps=["a", "b"], app_ids={"a": 1, "b": 0})
    assert app_users(sftp) == {"a": identity_for(1, "a").uid}  # 0 is no id
    argv, _ = build_argv(sftp, Path("/x"), (5, 5), app_users(sftp))
    assert argv[-2:] == [f"a:{identity_for(1, 'a').uid}", "b"]
    assert parse_apps(argv[-2:]) == (["a", "b"], {"a": (APP_UID_BASE + 1,) * 2})


@pytest.fixture
def root() -> Iterator[Path]:
    if os.geteuid() != 0 or not shutil.which("sftp"):
        pytest.fail("needs root and the OpenSSH sftp client (this suite runs as root)")
    # Not under pytest's tmp_path (root's 0700): the apps' users walk down to it.
    top = Path(tempfile.mkdtemp(prefix="roost-sftp-owners-"))
    os.chmod(top, 0o711)
    base = top / "appdata"
    for app, uid in (("a", A_UID), ("b", B_UID)):
        (base / app).mkdir(parents=True)
        os.chown(base / app, uid, uid)
        os.chmod(base / app, 0o700)
    secret = base / "a" / "secret.txt"
    secret.write_text("a's own\n")
    os.chown(secret, A_UID, A_UID)
    os.chmod(secret, 0o600)
    os.chmod(base, 0o711)
    try:
        yield base
    finally:
        shutil.rmtree(top)


def _sftp(tmp_path: Path, root: Path, apps: list[str], commands: str) -> str:
    script = tmp_path / "fake-ssh"
    script.write_text(
        f"#!/bin/sh\nexec '{sys.executable}' -m roost.servicehost.sftpd '{root}' "
        f"{NOBODY} {NOBODY} {' '.join(apps)}\n"
    )
    script.chmod(0o755)
    r = subprocess.run(
        ["sftp", "-S", str(script), "-b", "-", "host"],
        input=commands,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    return r.stdout + r.stderr


def test_each_tree_is_reached_as_its_owner(tmp_path: Path, root: Path) -> None:
    (tmp_path / "up.txt").write_text("up\n")
    out = _sftp(
        tmp_path,
        root,
        [f"a:{A_UID}", f"b:{B_UID}"],
        "get a/secret.txt got.txt\nput up.txt a/up.txt\nput up.txt b/up.txt\n",
    )
    assert (tmp_path / "got.txt").read_text() == "a's own\n", out
    assert (root / "a" / "up.txt").stat().st_uid == A_UID
    assert (root / "b" / "up.txt").stat().st_uid == B_UID
    # A rename from one app's tree into the other's is the kernel's to judge,
    # as the target's owner: refused, the file stays where it was.
    out = _sftp(tmp_path, root, [f"a:{A_UID}", f"b:{B_UID}"], "-rename a/secret.txt b/s.txt\n")
    assert (root / "a" / "secret.txt").exists() and not (root / "b" / "s.txt").exists(), out


def test_one_user_for_all_trees_reaches_none_of_them(tmp_path: Path, root: Path) -> None:
    # What the server did before each tree was its app's: one shared user,
    # which a tree owned by the app's user (0700) shuts out.
    out = _sftp(tmp_path, root, ["a", "b"], "get a/secret.txt got.txt\n")
    assert not (tmp_path / "got.txt").exists(), out
