"""Layers a runner unpacks as root: no setuid bit, no archive owner, no device node.

A layer's bytes are what a builder packed, but the tree it packed was the
build user's (so the upload's code's) to shape: these tests craft the tar
directly and unpack it the ways a runner does.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from roost.images import archive
from roost.images.archive import check_layer, unpack, unpack_async
from roost.images.cache import ImageCache
from roost.images.digest import ImageError
from roost.images.fetch import store_fetcher
from roost.images.manifest import FORMAT, ImageManifest, LayerRef, encode_manifest
from roost.images.store import ImageStore

SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
# An owner no file of the unpacking host should get from an archive.
STRANGER = 4321


def crafted(*members: tarfile.TarInfo, data: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for m in members:
            payload = (data or {}).get(m.name, b"")
            if m.isreg():
                m.size = len(payload)
            tf.addfile(m, io.BytesIO(payload) if m.isreg() else None)
    return buf.getvalue()


def member(
    name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = ""
) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.mode, m.linkname = kind, mode, link
    m.uid = m.gid = STRANGER
    m.uname, m.gname = "nobody", "nogroup"  # names that resolve: tarfile prefers them
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        m.devmajor, m.devminor = 1, 3  # /dev/null's numbers, not that it matters
    return m


SETUID_LAYER = crafted(
    member("bin", tarfile.DIRTYPE, 0o3777),
    member("bin/tool", mode=0o4755),
    member("bin/group-tool", mode=0o2755),
    member("bin/writable", mode=0o666),
    data={"bin/tool": b"#!/bin/sh\nid\n", "bin/group-tool": b"#!/bin/sh\nid\n"},
)


def assert_tame(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            continue
        assert stat.S_IMODE(st.st_mode) & (SPECIAL_BITS | 0o022) == 0, (p, oct(st.st_mode))
        assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid()), p


def _sync(a: Path, d: Path) -> None:
    unpack(a, d)


async def _async(a: Path, d: Path) -> None:
    await unpack_async(a, d)


def _tarfile(a: Path, d: Path) -> None:
    archive._unpack_with_tarfile(a, d)  # where GNU tar is missing


WAYS: list[Callable[[Path, Path], object]] = [_sync, _async, _tarfile]


@pytest.mark.parametrize("way", WAYS, ids=["tar", "tar-async", "tarfile"])
async def test_setuid_bits_and_owners_in_a_layer_do_not_survive(
    tmp_path: Path, way: Callable[[Path, Path], object]
) -> None:
    (tmp_path / "layer.tar").write_bytes(SETUID_LAYER)
    dest = tmp_path / "root"
    dest.mkdir()
    done = way(tmp_path / "layer.tar", dest)
    if done is not None:
        await done  # type: ignore[misc]
    assert sorted(p.name for p in dest.rglob("*")) == ["bin", "group-tool", "tool", "writable"]
    assert_tame(dest)
    assert os.stat(dest / "bin" / "tool").st_mode & 0o111 == 0o111  # still runnable


def store_image(store: ImageStore, venv: bytes, code: bytes) -> str:
    dep, cod = store.put_bytes(venv), store.put_bytes(code)
    manifest = ImageManifest(
        roost_image=FORMAT,
        layers=[
            LayerRef(digest=dep, size=len(venv), path="venv", kind="dependencies"),
            LayerRef(digest=cod, size=len(code), kind="code"),
        ],
    )
    return store.put_bytes(encode_manifest(manifest))


async def test_a_runner_composing_an_image_gets_no_setuid_file(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    image = store_image(store, SETUID_LAYER, SETUID_LAYER)
    root = await ImageCache(tmp_path / "cache", 1 << 30).ensure(image, store_fetcher(store))
    assert (root / "bin" / "tool").is_file() and (root / "venv" / "bin" / "tool").is_file()
    assert_tame(root / "bin")
    assert_tame(root / "venv" / "bin")


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (member("dev/disk", tarfile.BLKTYPE, 0o666), "device node"),
        (member("dev/null", tarfile.CHRTYPE, 0o666), "device node"),
        (member("pipe", tarfile.FIFOTYPE), "fifo"),
    ],
)
@pytest.mark.parametrize("way", WAYS, ids=["tar", "tar-async", "tarfile"])
async def test_special_files_in_a_layer_are_refused(
    tmp_path: Path, bad: tarfile.TarInfo, why: str, way: Callable[[Path, Path], object]
) -> None:
    (tmp_path / "layer.tar").write_bytes(crafted(member("ok.txt"), bad, data={"ok.txt": b"fine"}))
    dest = tmp_path / "root"
    dest.mkdir()
    with pytest.raises(ImageError, match=why):
        done = way(tmp_path / "layer.tar", dest)
        if done is not None:
            await done  # type: ignore[misc]
    assert list(dest.iterdir()) == []


async def test_a_layer_with_a_device_node_never_becomes_an_image(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    bad = crafted(member("dev/null", tarfile.CHRTYPE, 0o666))
    image = store_image(store, bad, SETUID_LAYER)
    cache = ImageCache(tmp_path / "cache", 1 << 30)
    with pytest.raises(ImageError, match="device node"):
        await cache.ensure(image, store_fetcher(store))
    assert not any(p.is_char_device() for p in (tmp_path / "cache").rglob("*"))


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([member("/etc/cron.d/x")], "absolute"),
        ([member("a/../../x")], "'\\.\\.'"),
        ([member("lnk", tarfile.SYMTYPE, link="sub"), member("lnk/x")], "goes through symlink"),
        ([member("f"), member("f/x")], "goes through file"),
        ([member("h", tarfile.LNKTYPE, link="/etc/shadow")], "absolute"),
        ([member("h", tarfile.LNKTYPE, link="later"), member("later")], "does not name a file"),
        ([member("s", tarfile.SYMTYPE, link="x"), member("s")], "twice"),
    ],
)
def test_layer_members_are_checked(members: list[tarfile.TarInfo], why: str) -> None:
    with pytest.raises(ImageError, match=why):
        check_layer(members)


def test_a_venv_layer_passes() -> None:
    check_layer(
        [
            member("bin", tarfile.DIRTYPE, 0o755),
            member("bin/python", tarfile.SYMTYPE, link="/usr/bin/python3.11"),
            member("bin/python3", tarfile.SYMTYPE, link="python"),
            member("lib64", tarfile.SYMTYPE, link="lib"),
            member("lib/python3.11/site-packages/x.py"),
            member(
                "lib/python3.11/site-packages/y.py",
                tarfile.LNKTYPE,
                link="lib/python3.11/site-packages/x.py",
            ),
        ]
    )
