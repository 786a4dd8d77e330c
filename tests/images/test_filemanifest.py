"""A layer named by its files (issue 21): the manifest's format, a scan that hashes only
new files, and a receiver's check that refuses any tree that is not exactly the manifest."""

from __future__ import annotations

import hashlib
import json
import os
import resource
from collections.abc import Callable
from pathlib import Path

import pytest

from roost.images.digest import ImageError
from roost.images.filemanifest import (
    DIR,
    FILE,
    LINK,
    FileManifest,
    Seen,
    compare_shape,
    encode_file_manifest,
    file_entry,
    file_manifest_digest,
    make_manifest,
    parse_file_manifest,
)
from roost.images.treescan import HashCache, key_of, scan_tree, verify_tree

H = hashlib.sha256(b"x").hexdigest()


def tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "pkg").mkdir(parents=True)
    (root / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    os.chmod(root / "bin" / "tool", 0o755)
    (root / "lib" / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (root / "lib" / "pkg" / "data.bin").write_bytes(bytes(range(256)) * (12 << 10))
    (root / "bin" / "python").symlink_to("/usr/bin/python3")
    (root / "pyvenv.cfg").write_text("relocatable = true\n")
    for p in (root / "bin", root / "lib", root / "lib" / "pkg"):
        os.chmod(p, 0o755)  # whatever the umask the tests run under
    for p in (root / "lib" / "pkg" / "__init__.py", root / "lib" / "pkg" / "data.bin",
              root / "pyvenv.cfg"):  # fmt: skip
        os.chmod(p, 0o644)
    return root


def test_the_manifest_is_canonical_and_names_what_it_lists(tmp_path: Path) -> None:
    m, stats = scan_tree(tree(tmp_path / "t"))
    data = encode_file_manifest(m)
    assert parse_file_manifest(data) == m
    assert file_manifest_digest(data) == "sha256:" + hashlib.sha256(data).hexdigest()
    kinds = {e.path: (e.kind, e.mode) for e in m.entries}
    assert kinds["bin"] == (DIR, 0o755) and kinds["bin/tool"] == (FILE, 0o755)
    assert kinds["bin/python"] == (LINK, 0) and kinds["pyvenv.cfg"] == (FILE, 0o644)
    init = next(e for e in m.entries if e.path == "lib/pkg/__init__.py")
    assert init.data == hashlib.sha256(b"VALUE = 1\n").hexdigest() and init.size == 10
    assert stats.files == 4 and stats.hashed == 4
    # The same files elsewhere, made at another time: the same bytes, the same digest.
    again, _ = scan_tree(tree(tmp_path / "u"))
    assert encode_file_manifest(again) == data


def test_a_manifest_no_builder_makes_is_refused() -> None:
    good = make_manifest([file_entry("a", DIR, 0o755), file_entry("a/b", FILE, 0o644, 1, H)])
    data = encode_file_manifest(good)
    assert parse_file_manifest(data) == good
    bad_entries = [
        ["../x", "f", 420, 1, H],
        ["/etc/passwd", "f", 420, 1, H],
        ["a//b", "f", 420, 1, H],
        ["a", "f", 420, 1, "nothex"],
        ["a", "c", 420, 0, ""],  # a device node is no kind a layer has
        ["a", "f", 0o4755, 1, H],  # setuid
        ["a", "f", 0o666, 1, H],  # world-writable
        ["a", "l", 0, 0, ""],  # a symlink to nowhere
        ["a", "d", 493, 3, ""],
    ]
    for entry in bad_entries:
        raw = b'{"entries":[' + _json(entry) + b'],"roost_files":1}'
        with pytest.raises(ImageError):
            parse_file_manifest(raw)
    # Out of order, twice the same path, a child of a file or of nothing listed.
    for entries in (
        [["b", "f", 420, 1, H], ["a", "f", 420, 1, H]],
        [["a", "f", 420, 1, H], ["a", "f", 420, 1, H]],
        [["a", "f", 420, 1, H], ["a/b", "f", 420, 1, H]],
        [["x/b", "f", 420, 1, H]],
        [["l", "l", 0, 0, "/etc"], ["l/passwd", "f", 420, 1, H]],
    ):
        raw = b'{"entries":[' + b",".join(_json(e) for e in entries) + b'],"roost_files":1}'
        with pytest.raises(ImageError):
            parse_file_manifest(raw)
    with pytest.raises(ImageError, match="canonical"):
        parse_file_manifest(data.replace(b'{"entries"', b'{ "entries"'))
    with pytest.raises(ImageError, match="format 2"):
        parse_file_manifest(data.replace(b'"roost_files":1', b'"roost_files":2'))
    with pytest.raises(ImageError, match="malformed"):
        parse_file_manifest(b"{not json")


def _json(entry: list[object]) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode()


def test_compare_shape_names_every_difference() -> None:
    m = make_manifest([
        file_entry("d", DIR, 0o755), file_entry("d/f", FILE, 0o644, 3, H),
        file_entry("d/l", LINK, 0, data="f"), file_entry("gone", FILE, 0o644, 1, H),
    ])  # fmt: skip
    same = [Seen("d", DIR, 0o755, 4096), Seen("d/f", FILE, 0o644, 3),
            Seen("d/l", LINK, 0o777, 1, "f"), Seen("gone", FILE, 0o644, 1)]  # fmt: skip
    assert compare_shape(m, same) == []
    changed = [Seen("d", DIR, 0o700, 4096), Seen("d/f", FILE, 0o755, 3),
               Seen("d/l", LINK, 0o777, 1, "/etc/passwd"), Seen("new", FILE, 0o644, 0)]  # fmt: skip
    problems = compare_shape(m, changed)
    assert problems == [
        "'d' has mode 700, listed 755",
        "'d/f' has mode 755, listed 644",
        "symlink 'd/l' points elsewhere than listed",
        "'gone' is missing",
        "'new' is not in the manifest",
    ]
    assert compare_shape(m, [*same[:1], Seen("d/f", FILE, 0o644, 4), *same[2:]]) == [
        "'d/f' is 4 bytes, listed 3"
    ]
    assert compare_shape(m, [*same[:1], Seen("d/f", DIR, 0o644, 0), *same[2:]]) == [
        "'d/f' is a directory, listed as a file"
    ]


def test_a_warm_scan_hashes_only_new_files(tmp_path: Path) -> None:
    """Hard links into a cache keep their inode: a second layer's scan reads only what is new."""
    cache_dir = tree(tmp_path / "cache")
    cache = HashCache()
    first, stats = scan_tree(cache_dir, cache)
    assert stats.hashed == 4
    layer = tmp_path / "layer"
    for e in first.entries:
        if e.kind == DIR:
            (layer / e.path).mkdir(parents=True)
        elif e.kind == LINK:
            (layer / e.path).symlink_to(e.data)
        else:
            os.link(cache_dir / e.path, layer / e.path)
    (layer / "bin" / "new-script").write_text("#!/bin/sh\n")
    second, stats = scan_tree(layer, cache)
    assert stats.hashed == 1 and stats.files == 5 and stats.hashed_bytes == len("#!/bin/sh\n")
    verify_tree(layer, second)  # what the cache claimed is what is there
    assert len(second.entries) == len(first.entries) + 1


def _get(cache: HashCache, ident: tuple[int, int, int, int]) -> str | None:
    """A lookup as a scan makes it: peeked, then marked used."""
    raw = cache.peek(key_of(ident))
    cache.touch([key_of(ident)])
    return raw.hex() if raw is not None else None


def test_the_hash_cache_keeps_the_most_recently_used() -> None:
    cache = HashCache(limit=2)
    a, b, c = (1, 10, 5, 100), (1, 11, 5, 100), (1, 12, 5, -1)
    cache.put(key_of(a), H)
    cache.put(key_of(b), H)
    assert _get(cache, a) == H  # a is now newer than b
    cache.put(key_of(c), "0" * 64)
    assert _get(cache, b) is None and _get(cache, a) == H and _get(cache, c) == "0" * 64
    assert len(cache) == 2 and _get(cache, (1, 10, 6, 100)) is None  # another size: another file


def test_a_scan_peeks_without_reordering_and_touches_once() -> None:
    """The scan looks hashes up without the lock, then marks them used in one go."""
    cache = HashCache(limit=2)
    a, b, c = (1, 10, 5, 100), (1, 11, 5, 100), (1, 12, 5, 100)
    cache.put(key_of(a), H)
    cache.put(key_of(b), H)
    assert cache.peek(key_of(a)) == bytes.fromhex(H)
    cache.touch([key_of(a), key_of(c)])  # a unknown key is passed over
    cache.put(key_of(c), H)  # b is the least recently used now, not a
    assert _get(cache, b) is None and _get(cache, a) == H


def test_a_scan_is_the_manifest_its_entries_make(tmp_path: Path) -> None:
    """Entries made and ordered by the walk itself are what make_manifest would make
    (whose checks a scan leaves out): names that sort around "/", UTF-8, links."""
    root = tree(tmp_path / "t")
    for name in ("a", "a-b", "a.b", "a0", "é"):
        (root / name).mkdir()
        (root / name / "x").write_text(name)
    (root / "a" / "z-").write_text("")
    (root / "a-b" / "to-a").symlink_to("../a")
    cache = HashCache()
    m, _ = scan_tree(root, cache)
    assert m == make_manifest(m.entries)
    assert encode_file_manifest(m) == encode_file_manifest(m, check=False)
    assert scan_tree(root, cache)[0] == m  # the same from the cache
    verify_tree(root, m)


def test_a_path_too_long_is_refused_and_no_descriptor_is_left(tmp_path: Path) -> None:
    root = tmp_path / "long"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(17):  # 17 levels of 250 characters: past 4,096
            os.mkdir("n" * 250, dir_fd=fd)
            sub = os.open("n" * 250, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    finally:
        os.close(fd)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(ImageError, match="too long"):
        scan_tree(root)
    deep = tmp_path / "deep"
    (deep / "/".join(["d"] * 70)).mkdir(parents=True)
    with pytest.raises(ImageError, match="nested more than"):
        scan_tree(deep)
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_tampered_file_is_refused_even_when_the_cache_vouched_for_it(tmp_path: Path) -> None:
    """The build user may rewrite a cached file in place and put its mtime back: the
    scan's claim is then wrong, and the receiver's check refuses the tree."""
    root = tree(tmp_path / "t")
    cache = HashCache()
    scan_tree(root, cache)
    target = root / "lib" / "pkg" / "__init__.py"
    before = target.stat()
    with open(target, "r+b") as fh:  # same inode, same size
        fh.write(b"EVIL")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    claimed, stats = scan_tree(root, cache)
    assert stats.hashed == 0  # the identity matched: the cache's old hash was used
    with pytest.raises(ImageError, match=r"'lib/pkg/__init__.py' differs from its manifest"):
        verify_tree(root, claimed)
    honest, _ = scan_tree(root)
    verify_tree(root, honest)


@pytest.mark.parametrize(
    "change, error",
    [
        (
            lambda r: (r / "lib" / "pkg" / "extra.py").write_text("x"),
            "'lib/pkg/extra.py' is not in",
        ),
        (lambda r: (r / "pyvenv.cfg").unlink(), "'pyvenv.cfg' is missing"),
        (lambda r: os.chmod(r / "pyvenv.cfg", 0o755), "'pyvenv.cfg' has mode 755, listed 644"),
        (lambda r: os.chmod(r / "bin" / "tool", 0o4755), "'bin/tool' has mode 4755, listed 755"),
        (lambda r: os.chmod(r / "bin", 0o775), "'bin' has mode 775, listed 755"),
        (lambda r: (r / "pyvenv.cfg").write_text("home = /evil\n"), "'pyvenv.cfg' is 13 bytes"),
        (lambda r: _relink(r / "bin" / "python", "/bin/sh"), "symlink 'bin/python' points"),
        (lambda r: _swap_dir(r / "lib" / "pkg"), "'lib/pkg' is a symlink, listed as a directory"),
    ],
)
def test_a_tree_that_is_not_its_manifest_is_refused(
    tmp_path: Path, change: Callable[[Path], object], error: str
) -> None:
    root = tree(tmp_path / "t")
    m, _ = scan_tree(root)
    verify_tree(root, m)
    change(root)
    with pytest.raises(ImageError, match=error):
        verify_tree(root, m)


def _relink(link: Path, target: str) -> None:
    link.unlink()
    link.symlink_to(target)


def _swap_dir(d: Path) -> None:
    """The directory moved out of the tree, a symlink to it in its place."""
    outside = d.parent.parent.parent / "outside"
    d.rename(outside)
    d.symlink_to(outside)


def test_a_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    with open(os.path.join(os.fsencode(root / "lib"), b"\xffname.py"), "wb"):
        pass
    with pytest.raises(ImageError, match="is not UTF-8"):
        scan_tree(root)


def test_a_wide_tree_is_walked_and_a_too_deep_one_refused(tmp_path: Path) -> None:
    wide = tmp_path / "wide"
    for i in range(1500):  # more directories than the descriptor limit set below
        (wide / f"d{i}").mkdir(parents=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))
    try:
        m, _ = scan_tree(wide)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(m.entries) == 1500
    deep = tmp_path / "deep"
    (deep / "/".join(["d"] * 70)).mkdir(parents=True)
    with pytest.raises(ImageError, match="nested more than 64 directories deep"):
        scan_tree(deep)


def test_a_special_file_is_refused(tmp_path: Path) -> None:
    root = tree(tmp_path / "t")
    os.mkfifo(root / "lib" / "fifo")
    with pytest.raises(ImageError, match="special file"):
        scan_tree(root)
    m = FileManifest(roost_files=1, entries=[])
    with pytest.raises(ImageError, match="special file"):
        verify_tree(root, m)
