"""The static bundle holds regular files only, whatever the app's code did.

collectstatic runs the app's own code (its Django settings) as the build
user; these builds plant links and special files in the collected tree and
write their own bundle archive, and check what reaches the image store.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from roost.builder.errors import BuildError
from roost.builder.pipeline import Build
from roost.builder.staticpack import drop_reason, pack_static_tree
from roost.builder.workspace import Workspace
from roost.images.store import ImageStore

from .conftest import EXAMPLES, tar_dir
from .test_build import APP_ID, leftovers

# Appended to the sample's settings: runs as the build user when the collect
# step exits, after collectstatic has filled STATIC_ROOT (staging/django).
PLANT = """
import atexit as _atexit, os as _os

def _plant():
    root = _os.environ.get("ROOST_STATIC_ROOT")
    if not root or not _os.path.isdir(root):
        return  # not the collect step
    staging = _os.path.dirname(root)
    out = _os.path.dirname(staging)
    _os.symlink("/", _os.path.join(root, "root"))
    _os.symlink("/etc/passwd", _os.path.join(root, "passwd.css"))
    _os.symlink("/etc", _os.path.join(root, "css", "etc"))
    _os.symlink("site.css", _os.path.join(root, "css", "alias.css"))
    # A second name for a file outside the bundle. (From the checkout it would
    # fail: the step's sandbox binds the checkout and the output separately,
    # and a hard link cannot cross mounts.)
    with open(_os.path.join(out, "outside.txt"), "w") as _fh:
        _fh.write("not for the bundle")
    _os.link(_os.path.join(out, "outside.txt"), _os.path.join(root, "manage.css"))
    _os.mkfifo(_os.path.join(root, "pipe.css"))
    # The archive too, as the collect step used to write it: links inside.
    import tarfile
    with tarfile.open(_os.path.join(out, "bundle.tar"), "w", format=tarfile.GNU_FORMAT) as tf:
        for name in ("root", "passwd.css", "css/etc", "css/site.css"):
            tf.add(_os.path.join(root, name), "django/" + name, recursive=False)
    MODE_PLACEHOLDER

_atexit.register(_plant)
"""


def hostile_app(tmp: Path, extra: str = "") -> bytes:
    app = tmp / "app"
    shutil.copytree(EXAMPLES / "django-sample", app)
    settings = app / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + PLANT.replace("MODE_PLACEHOLDER", extra))
    return tar_dir(app)


async def test_links_and_special_files_never_reach_the_bundle(
    ws: Workspace, tmp_path: Path
) -> None:
    lines: list[str] = []
    out = await Build(
        ws, "sl1", "djsample", hostile_app(tmp_path), lines.append, app_id=APP_ID
    ).run()
    assert out.static_digest and ws.store.verify(out.static_digest)
    with tarfile.open(ws.store.path(out.static_digest)) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert all(m.isfile() for m in members.values())
        data = b"".join(f.read() for m in members.values() if (f := tf.extractfile(m)))
    assert "django/css/site.css" in members and "django/admin/css/base.css" in members
    planted = ["root", "passwd.css", "css/etc", "css/alias.css", "manage.css", "pipe.css"]
    assert not any(f"django/{p}" in members for p in planted)
    assert not any(name.startswith(("django/root/", "django/css/etc/")) for name in members)
    assert b"root:x:0:0" not in data  # nothing of the host's /etc
    # Each dropped entry is named in the build log.
    dropped = [ln for ln in lines if "not bundled" in ln]
    for p in planted:
        assert any(f"django/{p} (" in ln for ln in dropped), (p, dropped)
    assert leftovers(ws) == []


async def test_a_staging_directory_swapped_for_a_link_fails_the_build(
    ws: Workspace, tmp_path: Path
) -> None:
    swap = (
        "import shutil as _sh\n"
        "    _sh.rmtree(staging)\n"
        "    _os.symlink('/etc', staging)\n"
    )  # fmt: skip
    lines: list[str] = []
    before = set(ws.store.list())
    with pytest.raises(BuildError, match=r"static files: .*not a directory"):
        await Build(
            ws, "sl2", "djsample", hostile_app(tmp_path, swap), lines.append, app_id=APP_ID
        ).run()
    for digest in set(ws.store.list()) - before:  # nothing of /etc was stored
        with tarfile.open(ws.store.path(digest)) as tf:
            assert not any(n.endswith("passwd") for n in tf.getnames())
    assert leftovers(ws) == []


def test_drop_reason_keeps_directories_and_single_named_files() -> None:
    assert drop_reason(stat.S_IFDIR | 0o755, 2) is None
    assert drop_reason(stat.S_IFREG | 0o644, 1) is None
    assert drop_reason(stat.S_IFREG | 0o644, 2) == "a hard link"
    assert drop_reason(stat.S_IFLNK | 0o777, 1) == "a symbolic link"
    assert drop_reason(stat.S_IFIFO | 0o644, 1) == "a FIFO"
    assert drop_reason(stat.S_IFSOCK | 0o755, 1) == "a socket"
    assert drop_reason(stat.S_IFCHR | 0o666, 1) == "a device"
    assert drop_reason(stat.S_IFBLK | 0o660, 1) == "a device"


def test_pack_static_tree_drops_links_and_bounds_the_size(tmp_path: Path) -> None:
    import threading

    staging = tmp_path / "staging"
    (staging / "css/deep").mkdir(parents=True)
    (staging / "css/site.css").write_bytes(b"body {}\n")
    (staging / "css/deep/x.js").write_bytes(b"x = 1\n")
    os.symlink("/", staging / "root")
    os.symlink("/etc/passwd", staging / "css/passwd.css")
    store = ImageStore(tmp_path / "store")
    packed = pack_static_tree(store, staging, 1 << 20, threading.Event())
    assert packed.files == 2
    assert packed.dropped == ["css/passwd.css (a symbolic link)", "root (a symbolic link)"]
    with tarfile.open(store.path(packed.digest)) as tf:
        members = tf.getmembers()
        assert [m.name for m in members] == ["css/deep/x.js", "css/site.css"]
        assert all(m.isfile() and m.mode == 0o644 and m.uid == 0 for m in members)
    with pytest.raises(BuildError, match="larger than"):
        pack_static_tree(store, staging, 1024, threading.Event())
    assert list(store.tmp_dir.iterdir()) == []
