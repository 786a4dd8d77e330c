"""A dependency layer named by its files (issue 21): what the builder's scan says of a
venv is what a runner finds after unpacking the layer's tar, and a tar that is not
what the manifest says is refused and leaves nothing behind."""

from __future__ import annotations

import io
import os
import tarfile
import threading
from pathlib import Path

import pytest

from roost.builder.pack import LAYER_TAR_FLAGS, pack_tree
from roost.builder.sandbox import BuildUser
from roost.images.archive import unpack_to_manifest
from roost.images.digest import ImageError
from roost.images.store import ImageStore
from roost.images.treescan import HashCache, scan_tree

ME = BuildUser(name="me", uid=os.geteuid(), gid=os.getegid(), dropped=False)


def venv(root: Path, cache: Path) -> Path:
    """A venv-like tree with what a real one holds: hard links into a cache, odd modes."""
    (cache / "pkg").mkdir(parents=True)
    (cache / "pkg" / "mod.py").write_text("X = 1\n")
    (cache / "pkg" / "_ext.so").write_bytes(b"\x7fELF" + bytes(4096))
    os.chmod(cache / "pkg" / "_ext.so", 0o775)  # group-writable: stripped on both sides
    site = root / "lib" / "python3.11" / "site-packages"
    (site / "pkg" / "__pycache__").mkdir(parents=True)
    for name in ("mod.py", "_ext.so"):
        os.link(cache / "pkg" / name, site / "pkg" / name)
    (site / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\x00" * 40)
    (root / "bin").mkdir()
    (root / "bin" / "gunicorn").write_text("#!/bin/sh\n")
    os.chmod(root / "bin" / "gunicorn", 0o4755)  # setuid: never carried
    (root / "bin" / "python").symlink_to("/usr/bin/python3")
    (root / "private").mkdir(mode=0o700)
    (root / "private" / "key").write_text("k")
    os.chmod(root / "private" / "key", 0o600)
    # Two names for one file inside the layer: the tar stores both as files.
    os.link(root / "bin" / "gunicorn", root / "bin" / "gunicorn-again")
    (root / "pyvenv.cfg").write_text("relocatable = true\n")
    return root


def pack(store: ImageStore, root: Path) -> Path:
    digest, _, _ = pack_tree(
        store, root, sorted(os.listdir(root)), LAYER_TAR_FLAGS, ME, threading.Event()
    )
    return store.path(digest)


def test_the_scan_of_a_venv_is_what_its_unpacked_layer_holds(tmp_path: Path) -> None:
    root = venv(tmp_path / "venv", tmp_path / "cache")
    cache = HashCache()
    scan_tree(tmp_path / "cache", cache)  # the uv cache seen before: its files not read again
    manifest, stats = scan_tree(root, cache)
    # gunicorn-again is gunicorn's inode: read once
    assert stats.files == 7 and stats.hashed == 4
    modes = {e.path: e.mode for e in manifest.entries}
    assert modes["bin/gunicorn"] == 0o755 and modes["private/key"] == 0o600
    assert modes["lib/python3.11/site-packages/pkg/_ext.so"] == 0o755
    store = ImageStore(tmp_path / "store")
    unpack_to_manifest(pack(store, root), tmp_path / "unpacked", manifest)
    assert (tmp_path / "unpacked" / "pyvenv.cfg").read_text() == "relocatable = true\n"


def test_a_layer_tar_that_is_not_its_manifest_is_refused(tmp_path: Path) -> None:
    root = venv(tmp_path / "venv", tmp_path / "cache")
    manifest, _ = scan_tree(root)
    store = ImageStore(tmp_path / "store")
    archive = pack(store, root)
    # The same tar with one file's bytes changed (same size): a lying sender.
    forged = tmp_path / "forged.tar"
    with tarfile.open(archive) as src, tarfile.open(forged, "w", format=tarfile.GNU_FORMAT) as out:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isreg() else None  # type: ignore[union-attr]
            if m.name.endswith("mod.py"):
                data = b"X = 2\n"
            out.addfile(m, io.BytesIO(data) if data is not None else None)
    dest = tmp_path / "unpacked"
    with pytest.raises(ImageError, match=r"pkg/mod.py' differs from its manifest"):
        unpack_to_manifest(forged, dest, manifest)
    assert not dest.exists()
    # One file more than listed.
    (root / "bin" / "extra").write_text("x")
    with pytest.raises(ImageError, match="'bin/extra' is not in the manifest"):
        unpack_to_manifest(pack(store, root), dest, manifest)
    assert not dest.exists()
