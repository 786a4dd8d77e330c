"""A runner's cache unpacks a layer named by its files by hard-linking the files its
verified layers already hold (roost.images.linkplan, linkunpack, layerindex): what
is linked, from where, that the result is exactly the manifest whatever the archive
or the cache's own files say, and that eviction and older caches stay safe."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest

from roost.images.archive import unpack_layer_archive
from roost.images.cache import ImageCache
from roost.images.digest import ImageError, parse_digest
from roost.images.fetch import store_fetcher
from roost.images.filemanifest import DIR, FILE, FileEntry
from roost.images.layerarchive import FILES_MEMBER
from roost.images.linkplan import (
    SKETCH_SIZE,
    Source,
    SourceFile,
    decode_layer_files,
    encode_layer_files,
    exclude_list,
    plan_links,
    rank_sources,
    sketch,
    sources_by_hash,
)
from roost.images.store import ImageStore

from .helpers import put_files_layered

MOD = b"X = 1\n" * 50
DATA = bytes(range(256)) * 40
SHA_MOD = "ab" * 32


# ---------------------------------------------------------------- pure decisions


def src(layer: str, path: str, sha: str = SHA_MOD, mode: int = 0o644, size: int = 300) -> Source:
    return Source(layer, SourceFile(path, mode, size, bytes.fromhex(sha), 1, 2, 3))


def fe(path: str, sha: str = SHA_MOD, mode: int = 0o644, size: int = 300) -> FileEntry:
    return FileEntry(path, FILE, mode, size, sha)


def test_the_plan_links_exact_files_preferring_the_same_path() -> None:
    by_hash = sources_by_hash({})
    assert plan_links([fe("a")], by_hash) == {}
    other, same = src("l1", "x/other.py"), src("l2", "a/mod.py")
    sources = {bytes.fromhex(SHA_MOD): [other, same]}
    plan = plan_links(
        [
            fe("a/mod.py"),  # the same path in l2: that one, not the first found
            fe("b/copy.py"),  # the bytes elsewhere: the first found
            fe("c/exec.py", mode=0o755),  # another mode: tar writes it
            fe("d/grown.py", size=301),  # another size (a lying manifest): tar writes it
            fe("e/new.py", sha="cd" * 32),  # bytes no cached layer holds
            fe("f/empty", sha="cd" * 32, size=0),  # empty: never linked
            fe("g/new\nline.py"),  # tar's exclude list is one name a line
            fe(FILES_MEMBER),  # the archive's head's place
            FileEntry("h", DIR, 0o755, 0, ""),
        ],
        sources,
    )
    assert plan == {"a/mod.py": same, "b/copy.py": other}
    assert exclude_list(plan) == b"a/mod.py\nb/copy.py\n"


def test_sources_are_ranked_by_their_sketches() -> None:
    hashes = [i.to_bytes(2, "big") * 16 for i in range(1000)]
    wanted = sketch(hashes)
    assert wanted == {h[:8] for h in hashes[:SKETCH_SIZE]}  # the smallest
    assert sketch(hashes[:3]) == {h[:8] for h in hashes[:3]}  # a small layer: all of it
    near = sketch(hashes[5:])  # one package fewer: most of the sample still shared
    far = sketch(hashes[SKETCH_SIZE - 10 :])
    sketches = {"far": far, "none": sketch([b"\xff" * 32]), "near": near, "near2": near}
    assert rank_sources(wanted, sketches) == ["near", "near2"]
    assert rank_sources(wanted, sketches, most=5) == ["near", "near2", "far"]


def test_an_index_round_trips_and_a_foreign_one_is_ignored() -> None:
    files = [src("l", "a/b.py").file]
    got = decode_layer_files(encode_layer_files(files))
    assert got is not None and got.files == files
    assert decode_layer_files(b"junk") is None
    assert decode_layer_files(b"\x82\xa6format\x02\xa5files\x90") is None  # another format


# ---------------------------------------------------------------- on disk


def tree(root: Path, *, new: bool = False) -> Path:
    """A venv-like layer; `new`: the next release's (one package changed, one added)."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(root / "bin" / "tool", 0o755)
    (root / "bin" / "python").symlink_to("/usr/bin/python3")
    pkg = root / "lib" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_bytes(b"")
    (pkg / "mod.py").write_bytes(MOD)
    (pkg / "data.bin").write_bytes(DATA)
    (root / "lib" / "changed").mkdir()
    (root / "lib" / "changed" / "v.py").write_bytes(b"V = 2\n" if new else b"V = 1\n")
    if new:
        (pkg / "copy.py").write_bytes(MOD)  # the same bytes at a new path
        (root / "lib" / "added").mkdir()
        (root / "lib" / "added" / "a.py").write_bytes(b"A = 1\n" * 10)
    (root / "pyvenv.cfg").write_bytes(b"relocatable = true\n")
    return root


class Runner:
    """A store with the two releases' images, and a runner's cache filled from it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = ImageStore(tmp / "store")
        code = {"app/x": b"x", "roost-image.json": b"{}"}
        self.old, self.old_layer, _ = put_files_layered(self.store, code, tree(tmp / "old"))
        self.new, self.new_layer, _ = put_files_layered(
            self.store, code, tree(tmp / "new", new=True)
        )
        self.forged: dict[str, Path] = {}
        self.cache = self.open()

    def open(self, max_bytes: int = 1 << 30) -> ImageCache:
        return ImageCache(self.tmp / "cache", max_bytes=max_bytes)

    async def fetch(self, digest: str, dest: Path) -> Path:
        if digest in self.forged:
            return Path(shutil.copy(self.forged[digest], dest / "forged"))
        return await store_fetcher(self.store)(digest, dest)

    def layer(self, digest: str) -> Path:
        return self.cache.layers / parse_digest(digest)

    def archive(self, digest: str) -> Path:
        return self.store.path(digest)


def same_file(a: Path, b: Path) -> bool:
    return os.stat(a).st_ino == os.stat(b).st_ino


async def test_a_new_layer_links_what_the_previous_one_holds(tmp_path: Path) -> None:
    r = Runner(tmp_path)
    await r.cache.ensure(r.old, r.fetch)
    new_root = await r.cache.ensure(r.new, r.fetch)
    old, new = r.layer(r.old_layer), r.layer(r.new_layer)
    assert os.readlink(new_root / "venv") == f"../../layers/{new.name}"
    for path in ("lib/pkg/mod.py", "lib/pkg/data.bin", "bin/tool", "pyvenv.cfg"):
        assert same_file(old / path, new / path), path
    assert same_file(old / "lib/pkg/mod.py", new / "lib/pkg/copy.py")  # by its bytes
    for path in ("lib/changed/v.py", "lib/pkg/__init__.py"):  # changed; empty
        assert not same_file(old / path, new / path), path
    assert (new / "lib/changed/v.py").read_bytes() == b"V = 2\n"
    assert (new / "lib/pkg/copy.py").read_bytes() == MOD
    assert os.stat(new / "bin/tool").st_mode & 0o777 == 0o755
    assert os.readlink(new / "bin/python") == "/usr/bin/python3"
    assert not (new / FILES_MEMBER).exists()
    index = tmp_path / "cache" / "meta" / "files"
    assert sorted(p.name for p in index.iterdir()) == sorted(
        f"{parse_digest(d)}.idx" for d in (r.old_layer, r.new_layer)
    )

    # The old release goes: the new layer keeps its files, the index forgets it.
    r.cache.remove(r.old)
    r.cache.max_bytes = 1
    r.cache.pin(r.new)
    assert await r.cache.evict_async() == [f"layer:{r.old_layer}"]
    assert not old.exists() and (new / "lib/pkg/mod.py").read_bytes() == MOD
    assert os.stat(new / "lib/pkg/mod.py").st_nlink == 2  # its own and copy.py
    assert [p.name for p in index.iterdir()] == [f"{parse_digest(r.new_layer)}.idx"]


async def test_a_cache_without_records_works_and_unknown_records_go(tmp_path: Path) -> None:
    """A cache the previous release wrote (no meta/files): its layers lend nothing and
    the new layer is unpacked whole; a record whose layer is gone is dropped at start."""
    r = Runner(tmp_path)
    await r.cache.ensure(r.old, r.fetch)
    index = tmp_path / "cache" / "meta" / "files"
    shutil.rmtree(index)
    stray = f"{'e' * 64}.idx"
    cache = r.open()
    (index / stray).write_bytes(b"x")
    cache = r.open()
    assert not (index / stray).exists()
    await cache.ensure(r.new, r.fetch)
    old, new = r.layer(r.old_layer), r.layer(r.new_layer)
    assert not same_file(old / "lib/pkg/mod.py", new / "lib/pkg/mod.py")
    assert (new / "lib/pkg/mod.py").read_bytes() == MOD


def gnu(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = b""
    for info, body in members:
        info.size = len(body)
        out += info.tobuf(format=tarfile.GNU_FORMAT) + body + bytes(-len(body) % 512)
    return out + bytes(1024)


def honest_members(archive: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(archive) as tf:
        return [
            (m, tf.extractfile(m).read() if m.isreg() else b"")  # type: ignore[union-attr]
            for m in tf.getmembers()
        ]


async def test_a_manifest_naming_held_bytes_gets_those_bytes_never_the_archive_s(
    tmp_path: Path,
) -> None:
    """The archive carries other bytes for a file whose listed sha256 a cached layer
    holds: with the source, the tree holds the true bytes (linked); without, refused.
    Bytes of another size than listed are refused by the headers, before tar runs."""
    r = Runner(tmp_path)
    evil = b"import os; os.system('x')#".ljust(len(MOD), b"#")  # the listed size

    def forge(data_for: bytes) -> Path:
        forged = tmp_path / f"forged-{len(data_for)}.tar"
        forged.write_bytes(
            gnu(*(
                (m, data_for if m.name in ("lib/pkg/mod.py", "lib/pkg/copy.py") else data)
                for m, data in honest_members(r.archive(r.new_layer))
            ))
        )  # fmt: skip
        return forged

    r.forged[r.new_layer] = forge(evil)
    fresh = ImageCache(tmp_path / "fresh", max_bytes=1 << 30)
    with pytest.raises(ImageError, match=r"lib/pkg/(copy|mod)\.py' differs"):
        await fresh.ensure(r.new, r.fetch)
    assert list((tmp_path / "fresh" / "layers").iterdir()) == []

    await r.cache.ensure(r.old, r.fetch)
    r.forged[r.new_layer] = forge(b"import os; os.system('x')\n")
    with pytest.raises(ImageError, match=r"lib/pkg/copy\.py' is 26 bytes"):
        await r.cache.ensure(r.new, r.fetch)
    r.forged[r.new_layer] = forge(evil)
    await r.cache.ensure(r.new, r.fetch)
    new = r.layer(r.new_layer)
    assert (new / "lib/pkg/mod.py").read_bytes() == MOD
    assert (new / "lib/pkg/copy.py").read_bytes() == MOD
    assert (r.layer(r.old_layer) / "lib/pkg/mod.py").read_bytes() == MOD


@pytest.mark.parametrize("how", ["grown", "grown, mtime put back", "same size"])
async def test_a_cached_file_changed_since_its_check_is_not_linked(
    tmp_path: Path, how: str
) -> None:
    """Rewritten in place (the same inode) after its check: another size (its mtime put
    back or not), or the same size and a new mtime: its identity is not the record's,
    so tar writes the new layer's file, which is hashed like any other."""
    r = Runner(tmp_path)
    await r.cache.ensure(r.old, r.fetch)
    cached = r.layer(r.old_layer) / "lib/pkg/data.bin"
    st = os.stat(cached)
    with open(cached, "r+b") as fh:
        fh.write(b"T" * (len(DATA) + 1 if how.startswith("grown") else 100))
    if how == "grown, mtime put back":
        os.utime(cached, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(cached).st_ino == st.st_ino
    await r.cache.ensure(r.new, r.fetch)
    new = r.layer(r.new_layer)
    assert (new / "lib/pkg/data.bin").read_bytes() == DATA
    assert not same_file(cached, new / "lib/pkg/data.bin")
    assert same_file(r.layer(r.old_layer) / "lib/pkg/mod.py", new / "lib/pkg/mod.py")


async def test_identity_is_what_the_record_trusts(tmp_path: Path) -> None:
    """The model's limit, stated: bytes changed with size and mtime put back keep the
    identity, and are linked. Only the cache's owner (the runner) can do that: tenants
    see layers read-only, and the cache never re-reads a layer it verified, linked or not."""
    r = Runner(tmp_path)
    await r.cache.ensure(r.old, r.fetch)
    cached = r.layer(r.old_layer) / "lib/pkg/data.bin"
    st = os.stat(cached)
    with open(cached, "r+b") as fh:
        fh.write(b"T" * 100)
    os.utime(cached, ns=(st.st_atime_ns, st.st_mtime_ns))
    await r.cache.ensure(r.new, r.fetch)
    assert same_file(cached, r.layer(r.new_layer) / "lib/pkg/data.bin")


async def test_modes_differing_from_the_source_are_written_not_linked(tmp_path: Path) -> None:
    r = Runner(tmp_path)
    await r.cache.ensure(r.old, r.fetch)
    # The old layer's mod.py made executable after its check: its mode no longer the
    # record's (the plan would still pick it): the link is undone, tar writes it.
    os.chmod(r.layer(r.old_layer) / "lib/pkg/mod.py", 0o755)
    await r.cache.ensure(r.new, r.fetch)
    new = r.layer(r.new_layer)
    assert os.stat(new / "lib/pkg/mod.py").st_mode & 0o777 == 0o644
    assert not same_file(r.layer(r.old_layer) / "lib/pkg/mod.py", new / "lib/pkg/mod.py")
    assert os.stat(r.layer(r.old_layer) / "lib/pkg/mod.py").st_mode & 0o777 == 0o755


def swap(
    members: list[tuple[tarfile.TarInfo, bytes]], name: str, *new: tuple[tarfile.TarInfo, bytes]
) -> list[tuple[tarfile.TarInfo, bytes]]:
    out = [m for m in members if m[0].name.rstrip("/") != name]
    at = next(i for i, m in enumerate(members) if m[0].name.rstrip("/") == name)
    return [*out[:at], *new, *out[at:]]


def info(
    name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644
) -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type, i.linkname, i.mode = kind, link, mode
    return i


async def test_hostile_members_are_refused_or_hold_the_manifest_s_bytes(tmp_path: Path) -> None:
    """A `..` member, the archive's `lib` a symlink into the cached layer (where the
    manifest lists a directory), a hard link member to a linked file: each is refused,
    and the cached layer's files are never written."""
    r = Runner(tmp_path)
    await r.cache.ensure(r.old, r.fetch)
    old = r.layer(r.old_layer)
    before = {p: p.read_bytes() for p in old.rglob("*") if p.is_file()}
    entries = sorted(old.rglob("*"))
    members = honest_members(r.archive(r.new_layer))
    head, rest = members[0], members[1:]
    assert head[0].name == FILES_MEMBER

    async def attempt(forged: list[tuple[tarfile.TarInfo, bytes]]) -> Path | None:
        path = tmp_path / "forged.tar"
        path.write_bytes(gnu(head, *forged))
        r.forged[r.new_layer] = path
        try:
            await r.cache.ensure(r.new, r.fetch)
        except ImageError:
            assert not r.layer(r.new_layer).exists()
            return None
        new = r.layer(r.new_layer)
        for p in new.rglob("*"):
            assert not p.is_symlink() or p.name == "python"
        assert (new / "lib/pkg/mod.py").read_bytes() == MOD
        return new

    dotdot = [*rest, (info("lib/../../escaped"), b"x")]
    assert await attempt(dotdot) is None
    assert not (r.cache.layers / "escaped").exists() and not (tmp_path / "escaped").exists()
    into = os.path.relpath(old / "lib", r.cache.layers / "new")
    # The manifest lists lib/ and its files (linked first): the archive's lib is a
    # symlink into the cached layer, relative or absolute, and nothing below it.
    no_lib = [m for m in rest if not m[0].name.startswith("lib/")]
    for target in (into, str(old / "lib")):
        lib_link = swap(no_lib, "lib", (info("lib", tarfile.SYMTYPE, target), b""))
        assert await attempt(lib_link) is None
    # Hard link members, refused by the headers before tar runs: to a linked
    # file, for a file the cache does not hold; in place of a linked file.
    to_tool = (info("lib/added/a.py", tarfile.LNKTYPE, "bin/tool"), b"")
    assert await attempt(swap(rest, "lib/added/a.py", to_tool)) is None
    to_copy = (info("lib/pkg/mod.py", tarfile.LNKTYPE, "lib/pkg/copy.py"), b"")
    assert await attempt(swap(rest, "lib/pkg/mod.py", to_copy)) is None
    assert {p: p.read_bytes() for p in old.rglob("*") if p.is_file()} == before
    assert sorted(old.rglob("*")) == entries


async def test_a_source_evicted_between_lookup_and_link(tmp_path: Path) -> None:
    """The source layer renamed away and deleted (an eviction) after the plan was made:
    every link fails, tar writes those members, and the tree is checked whole."""
    r = Runner(tmp_path)
    await r.cache.ensure(r.old, r.fetch)
    old = r.layer(r.old_layer)
    finder = r.cache._files.finder([r.old_layer])

    def then_evicted(manifest):  # type: ignore[no-untyped-def]
        found = finder(manifest)
        assert found
        trash = old.with_name(".evict-test")
        os.replace(old, trash)
        shutil.rmtree(trash)
        return found

    dest = tmp_path / "unpacked"
    checked = unpack_layer_archive(
        r.archive(r.new_layer), dest, r.new_layer, layers=r.cache.layers, sources=then_evicted
    )
    assert checked.hashed == len(checked.files) + 1  # every file read (the empty one too)
    assert (dest / "lib/pkg/mod.py").read_bytes() == MOD
    assert os.stat(dest / "lib/pkg/mod.py").st_nlink == 1
