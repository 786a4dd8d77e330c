"""A dependency layer named by its files (issue 21): what the builder's scan says of a
venv is what a runner finds after unpacking the layer's archive, and an archive that
is not what its manifest says is refused by a store and by an unpack, leaving nothing
behind."""

from __future__ import annotations

import io
import os
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from roost.builder.layerpack import Named, name_by_files, pack_named
from roost.builder.sandbox import BuildUser
from roost.images.archive import unpack_layer_archive
from roost.images.digest import ImageError
from roost.images.layerarchive import (
    FILES_MEMBER,
    ArchiveCheck,
    ArchiveRefused,
    archive_size,
    check_head,
    check_members,
    verify_archive,
)
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


def pack(store: ImageStore, root: Path, named: Named) -> Path:
    digest, size, _ = pack_named(store, root, named, ME, threading.Event())
    assert digest == named.digest and size == named.size
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
    named = name_by_files(root, cache)
    archive = pack(store, root, named)
    assert verify_archive(archive, named.digest) == manifest
    unpack_layer_archive(archive, tmp_path / "unpacked", named.digest)
    assert (tmp_path / "unpacked" / "pyvenv.cfg").read_text() == "relocatable = true\n"
    assert not (tmp_path / "unpacked" / FILES_MEMBER).exists()  # the manifest is not kept


def _rewrite(
    archive: Path, out: Path, change: Callable[[tarfile.TarInfo, bytes | None], bytes | None]
) -> Path:
    """The same archive, each regular member's bytes as `change` says: a lying sender."""
    with tarfile.open(archive) as src, tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isreg() else None  # type: ignore[union-attr]
            data = change(m, data)
            if data is not None:
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    return out


def test_a_layer_archive_that_is_not_its_manifest_is_refused(tmp_path: Path) -> None:
    """By the store (a copy is not kept), by a runner's unpack (nothing left), and by
    a transport's check of the head (the wrong layer's archive)."""
    root = venv(tmp_path / "venv", tmp_path / "cache")
    named = name_by_files(root, HashCache())
    store = ImageStore(tmp_path / "store")
    archive = pack(store, root, named)
    second = ImageStore(tmp_path / "second")
    dest = tmp_path / "unpacked"

    def refused(forged: Path, match: str) -> None:
        with pytest.raises(ImageError, match=match):
            verify_archive(forged, named.digest)
        with pytest.raises(ImageError, match=match):
            second.put_files_archive(forged, named.digest)
        assert not second.has(named.digest) and not list(second.tmp_dir.iterdir())
        with pytest.raises(ImageError, match=match):
            unpack_layer_archive(forged, dest, named.digest)
        assert not dest.exists()

    # One file's bytes changed (same size).
    forged = _rewrite(archive, tmp_path / "f1.tar",
                      lambda m, d: b"X = 2\n" if m.name.endswith("mod.py") else d)  # fmt: skip
    refused(forged, r"pkg/mod.py' differs from its manifest")
    # Headers only: the bytes are for the unpacked tree's check to refuse (above).
    assert check_members(forged, named.digest) == verify_archive(archive, named.digest)
    # A setuid bit where the manifest lists none: the store's check sees the
    # header's bits as the unpack keeps them (setuid never is), so the mode
    # check is the unpacked tree's; one file more than listed is refused by all.
    (root / "bin" / "extra").write_text("x")
    extra = store.new_tmp_path()
    with tarfile.open(archive) as src, tarfile.open(extra, "w", format=tarfile.GNU_FORMAT) as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isreg() else None)
        dst.add(root / "bin" / "extra", "bin/extra")
    refused(extra, "'bin/extra' is not in the manifest")
    # The head of another layer: the wrong archive for this name.
    other = name_by_files(tmp_path / "cache", HashCache())
    wrong_head = tmp_path / "f3.tar"
    wrong_head.write_bytes(other.head + archive.read_bytes()[len(named.head) :])
    refused(wrong_head, "holds another layer's manifest")
    with pytest.raises(ImageError, match="holds another layer's manifest"):
        check_head(wrong_head, named.digest)
    # No head at all: a plain tar of the tree.
    plain = tmp_path / "f4.tar"
    plain.write_bytes(archive.read_bytes()[len(named.head) :])
    refused(plain, "does not begin with its file manifest")
    # The real one passes every check, and the copy is kept.
    assert second.put_files_archive(archive, named.digest) and second.verify(named.digest)


@pytest.mark.parametrize("length", [99, 100, 101, 150, 511, 512])
def test_the_archive_s_size_is_known_from_its_manifest(tmp_path: Path, length: int) -> None:
    """GNU tar's output for a tree, predicted from the manifest (the builder serves
    the archive while tar writes it): names and symlink targets around the header's
    100 bytes, a directory's trailing slash, non-ASCII names, empty and block-sized files."""
    root = tmp_path / "venv"
    (root / "d").mkdir(parents=True)
    # A directory whose member name ("d/.../", trailing slash included) and a
    # file whose name are `length` bytes, é being two of them.
    deep = _path(length - 3)
    (root / "d" / deep).mkdir(parents=True)
    (root / "d" / _path(length - 2)).write_bytes(b"x" * 512)
    (root / "empty").write_bytes(b"")
    (root / "odd").write_bytes(os.urandom(513 * 3))
    (root / "link").symlink_to("t" * length)
    (root / ("l" * min(length, 250))).symlink_to("../" * 3)
    for i in range(300):  # past one 128 KiB record
        (root / "d" / f"f{i}").write_bytes(os.urandom(i * 7))
    named = name_by_files(root, HashCache())
    store = ImageStore(tmp_path / "store")
    pack(store, root, named)  # asserts the size tar wrote is the one predicted
    assert store.size(named.digest) == archive_size(scan_tree(root)[0], len(named.head))


def _path(n: int) -> str:
    """A relative path of `n` bytes in UTF-8, in components short enough for any filesystem."""
    parts, left = [], n
    while left > 0:
        size = min(left, 120)
        if left - size == 1:  # no one-byte remainder after the slash
            size -= 2
        part = ("é" + "p" * (size - 2)) if size >= 2 else "q"
        parts.append(part)
        left -= size + 1
    path = "/".join(parts)
    assert len(path.encode()) == n, (len(path.encode()), n)
    return path


def test_the_archive_is_checked_as_it_arrives_in_any_pieces(tmp_path: Path) -> None:
    """ArchiveCheck takes the bytes as a copy or a pack hands them over: one at a time,
    or odd pieces, gives the manifest whole; a cut, a tail of junk, a damaged header or
    a member of a kind no layer holds is refused."""
    root = venv(tmp_path / "venv", tmp_path / "cache")
    named = name_by_files(root, HashCache())
    data = pack(ImageStore(tmp_path / "store"), root, named).read_bytes()
    manifest = verify_archive(tmp_path / "store" / "files" / named.digest[7:], named.digest)
    for size in (1, 7, 511, 512, 513, 65536):
        check = ArchiveCheck(named.digest)
        for at in range(0, len(data), size):
            check.feed(data[at : at + size])
        assert check.finish() == manifest

    def refused(raw: bytes, match: str) -> None:
        with pytest.raises(ArchiveRefused, match=match):
            check = ArchiveCheck(named.digest)
            check.feed(raw)
            check.finish()
        # The runner's header-only pass (file bytes skipped) refuses the same.
        forged = tmp_path / "forged.tar"
        forged.write_bytes(raw)
        with pytest.raises(ArchiveRefused, match=match):
            check_members(forged, named.digest)

    end = data.index(bytes(1024), len(named.head))  # where tar's zero blocks begin
    refused(data[:end], "cut short")
    refused(data[: end - 700], "cut short")  # within a member's bytes, which are skipped
    refused(data[:100], "cut short")  # within the manifest's own header
    refused(data + b"junk", "data after the archive's end")
    damaged = bytearray(data)
    damaged[len(named.head) + 10] ^= 1  # a byte of the first member's name
    refused(bytes(damaged), "checksum does not match")

    def member(info: tarfile.TarInfo, body: bytes = b"") -> bytes:
        info.size = len(body)
        pad = -len(body) % 512
        return info.tobuf(format=tarfile.GNU_FORMAT) + body + bytes(pad)

    link = tarfile.TarInfo("bin/hard")
    link.type, link.linkname = tarfile.LNKTYPE, "bin/gunicorn"
    refused(named.head + member(link) + bytes(1024), "'bin/hard' is a hard link")
    fifo = tarfile.TarInfo("bin/fifo")
    fifo.type = tarfile.FIFOTYPE
    refused(named.head + member(fifo) + bytes(1024), "of type b'6'")
    pax = tarfile.TarInfo("bin/x").tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8")
    refused(named.head + pax, "not in GNU tar's format")
    # Members far past the manifest's count are refused as they come, not remembered.
    many = 2 * len(manifest.entries) + 1001
    extra = b"".join(member(tarfile.TarInfo(f"x{i}")) for i in range(many))
    refused(named.head + extra + bytes(1024), "far more members than its manifest's")
