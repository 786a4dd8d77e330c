"""The dependency layer's bytecode: compiled once per source file, linked after."""

from __future__ import annotations

import importlib.util
import marshal
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from roost.builder import bytecode
from roost.builder import bytecode_script as script
from roost.builder.workspace import Workspace

from .conftest import EXAMPLES, tar_dir
from .test_build import build

TAG = sys.implementation.cache_tag


def site(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def pyc_of(src: Path) -> Path:
    return src.parent / "__pycache__" / f"{src.stem}.{TAG}.pyc"


def run_value(pyc: Path, src: Path) -> object:
    """What the module at `src` sets as VALUE, run from its pyc; the pyc checked first."""
    data = pyc.read_bytes()
    assert data[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(data[4:8], "little") == 0b11  # hash-based, checked at import
    assert data[8:16] == importlib.util.source_hash(src.read_bytes())
    ns: dict[str, object] = {}
    exec(marshal.loads(data[16:]), ns)
    return ns["VALUE"]


FILES = {
    "pkg/__init__.py": "",
    "pkg/a.py": "VALUE = 'a'\n",
    "pkg/sub/b.py": "VALUE = 'b'\n",
    "top.py": "VALUE = 3\n",
}


def test_compiled_once_then_linked_into_another_layer(tmp_path: Path) -> None:
    store = tmp_path / "store"
    one = site(tmp_path / "one", FILES)
    assert script.run(str(one), str(store), 1) == (4, 0, 4, 0)
    assert run_value(pyc_of(one / "pkg/a.py"), one / "pkg/a.py") == "a"
    assert run_value(pyc_of(one / "top.py"), one / "top.py") == 3
    # Another layer of the same packages, one module changed: the others'
    # pycs are the stored files themselves (hard links), only the change compiles.
    two = site(tmp_path / "two", {**FILES, "pkg/sub/b.py": "VALUE = 'changed'\n"})
    assert script.run(str(two), str(store), 1) == (4, 3, 1, 0)
    a1, a2 = pyc_of(one / "pkg/a.py").stat(), pyc_of(two / "pkg/a.py").stat()
    assert (a1.st_ino, a1.st_dev) == (a2.st_ino, a2.st_dev) and a2.st_nlink == 3
    assert run_value(pyc_of(two / "pkg/sub/b.py"), two / "pkg/sub/b.py") == "changed"
    assert run_value(pyc_of(one / "pkg/sub/b.py"), one / "pkg/sub/b.py") == "b"
    assert not pyc_of(two / "pkg/sub/b.py").samefile(pyc_of(one / "pkg/sub/b.py"))
    # The recorded file name is the module's place in site-packages, not the layer's.
    code = marshal.loads(pyc_of(two / "pkg/a.py").read_bytes()[16:])
    assert code.co_filename == "pkg/a.py"
    assert all(oct(p.stat().st_mode)[-3:] == "644" for p in two.rglob("*.pyc"))


def test_a_source_seen_before_is_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index by identity: a layer whose sources are the same files (hard links,
    as uv makes them from its cache) reads none of them; a wrong claim costs no
    correctness, since the import system checks each pyc against its source."""
    store = tmp_path / "store"
    one = site(tmp_path / "one", FILES)
    assert script.run(str(one), str(store), 1) == (4, 0, 4, 0)
    two = tmp_path / "two"
    for src in one.rglob("*.py"):
        (two / src.relative_to(one)).parent.mkdir(parents=True, exist_ok=True)
        os.link(src, two / src.relative_to(one))
    read: list[str] = []
    real = script._key_of
    monkeypatch.setattr(script, "_key_of", lambda path, name: read.append(name) or real(path, name))
    assert script.run(str(two), str(store), 1) == (4, 4, 0, 0) and read == []
    assert run_value(pyc_of(two / "pkg/a.py"), two / "pkg/a.py") == "a"
    # Rewritten in place, same size, its mtime put back: the index is wrong and
    # the old source's pyc is linked; its recorded hash is not the new source's,
    # so an import compiles the new source instead.
    b = two / "pkg/sub/b.py"
    st = b.stat()
    b.write_text("VALUE = 'B'\n")
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert script.run(str(two), str(store), 1) == (4, 4, 0, 0) and read == []
    assert pyc_of(b).read_bytes()[8:16] != importlib.util.source_hash(b.read_bytes())
    imported = subprocess.run(
        [sys.executable, "-B", "-c", "import pkg.sub.b as m; print(m.VALUE)"],
        cwd=two, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert imported.stdout.strip() == "B"
    # A new file (another inode) is read; an index that does not parse is none.
    b.unlink()
    b.write_text("VALUE = 'B'\n")
    assert script.run(str(two), str(store), 1) == (4, 3, 1, 0) and read == ["pkg/sub/b.py"]
    assert run_value(pyc_of(b), b) == "B"
    for shard in (store / script.interpreter_tag() / script.INDEX_DIR).iterdir():
        shard.write_bytes(b"\x00not marshal")
    read.clear()
    assert script.run(str(two), str(store), 1) == (4, 4, 0, 0) and len(read) == 4
    # An entry whose key is no sha256 (a path out of the store) is not followed.
    outside = tmp_path / ("o" * 57 + ".pyc")  # <store>/<tag>/../<key>: ../../ from the tag
    outside.write_bytes(b"not a pyc")
    escape = f"../{outside.name}"
    assert len(escape) == 64 and os.path.samefile(
        script.entry(str(store / script.interpreter_tag()), escape), outside
    )
    top = two / "top.py"
    shard = store / script.interpreter_tag() / script.INDEX_DIR / script.shard_of("top.py")
    ident = script._identity(str(top), "top.py")
    shard.write_bytes(marshal.dumps({ident: escape}))
    read.clear()
    script.run(str(two), str(store), 1)
    assert read == ["top.py"] and not pyc_of(top).samefile(outside)
    assert bytecode.prune(store) == 0  # the index is not a pyc to prune


def test_a_layer_loads_and_writes_only_its_own_packages_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index is one file per top-level name: a builder's history of other apps'
    packages costs a layer nothing, and a layer adds to the files of its own."""
    store = tmp_path / "store"
    tag = store / script.interpreter_tag()
    tag.mkdir(parents=True)
    (tag / script.OLD_INDEX).write_bytes(marshal.dumps({("x.py", 1, 2, 3, 4): "0" * 64}))
    one = site(tmp_path / "one", FILES)
    script.run(str(one), str(store), 1)
    index = tag / script.INDEX_DIR
    assert sorted(p.name for p in index.iterdir()) == sorted(
        script.shard_of(n) for n in ("pkg/a.py", "top.py")
    )
    assert not (tag / script.OLD_INDEX).exists()  # the earlier release's single file
    pkg_shard = index / script.shard_of("pkg/__init__.py")
    before = pkg_shard.stat()
    loaded: list[str] = []
    real = script.load_shard
    monkeypatch.setattr(script, "load_shard", lambda path: loaded.append(path) or real(path))
    two = site(tmp_path / "two", {"other.py": "VALUE = 9\n"})
    assert script.run(str(two), str(store), 1) == (1, 0, 1, 0)
    assert loaded == [str(index / script.shard_of("other.py"))]
    after = pkg_shard.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # A layer whose entries are all known writes nothing.
    loaded.clear()
    three = tmp_path / "three"
    three.mkdir()
    os.link(two / "other.py", three / "other.py")
    other_shard = index / script.shard_of("other.py")
    before = other_shard.stat()
    assert script.run(str(three), str(store), 1) == (1, 1, 0, 0)
    assert other_shard.stat().st_ino == before.st_ino
    assert bytecode.prune(store) == 0  # the index files are no pycs to prune


def test_an_index_file_keeps_this_layer_and_a_bounded_past(tmp_path: Path) -> None:
    def ident(i: int) -> script.Identity:
        return (f"pkg/m{i}.py", 1, i, 10, 100)

    old = {ident(i): f"{i:064x}" for i in range(1000)}
    seen = {ident(i): f"{i:064x}" for i in range(2000, 2010)}
    path = tmp_path / "shard"
    script.save_shard(str(path), old, seen)
    kept = script.load_shard(str(path))
    bound = (script.SHARD_KEEP + 1) * len(seen) + script.SHARD_FLOOR
    assert len(kept) == bound and all(kept[i] == k for i, k in seen.items())
    assert list(kept)[len(seen) :] == list(old)[: bound - len(seen)]  # the newest of the past


def test_without_a_store_everything_compiles_and_nothing_is_shared(tmp_path: Path) -> None:
    one = site(tmp_path / "one", FILES)
    assert script.run(str(one), None, 1) == (4, 0, 4, 0)
    assert script.run(str(site(tmp_path / "two", FILES)), None, 1) == (4, 0, 4, 0)
    assert pyc_of(one / "top.py").stat().st_nlink == 1


def test_uncompilable_and_linked_modules_get_no_bytecode(tmp_path: Path) -> None:
    root = site(tmp_path / "s", {"ok.py": "VALUE = 1\n", "py2.py": "print 'old'\n"})
    (root / "elsewhere.py").symlink_to(tmp_path / "outside.py")
    (tmp_path / "outside.py").write_text("VALUE = 2\n")
    assert script.run(str(root), str(tmp_path / "store"), 1) == (2, 0, 1, 1)
    assert pyc_of(root / "ok.py").exists() and not pyc_of(root / "py2.py").exists()
    assert not pyc_of(root / "elsewhere.py").exists()


def test_many_misses_compile_in_forked_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(script, "FORK_MIN", 4)
    files = {f"m{i}.py": f"VALUE = {i}\n" for i in range(12)}
    files["bad.py"] = "def (:\n"
    root = site(tmp_path / "s", files)
    assert script.run(str(root), str(tmp_path / "store"), 3) == (13, 0, 12, 1)
    assert all(run_value(pyc_of(root / f"m{i}.py"), root / f"m{i}.py") == i for i in range(12))
    again = site(tmp_path / "t", files)
    assert script.run(str(again), str(tmp_path / "store"), 3) == (13, 12, 0, 1)


def test_prune_keeps_what_a_layer_still_links(tmp_path: Path) -> None:
    store = tmp_path / "store"
    one = site(tmp_path / "one", FILES)
    script.run(str(one), str(store), 1)
    two = site(tmp_path / "two", {"other.py": "VALUE = 9\n"})
    script.run(str(two), str(store), 1)
    shutil.rmtree(one)  # a pruned layer
    (store / "stray.tmp").write_text("")  # neither a tag nor an entry: left alone
    assert bytecode.prune(store) == 4
    assert pyc_of(two / "other.py").stat().st_nlink == 2
    assert script.run(str(site(tmp_path / "three", {"other.py": "VALUE = 9\n"})),
                      str(store), 1) == (1, 1, 0, 0)  # fmt: skip
    assert bytecode.prune(tmp_path / "missing") == 0


async def test_a_fresh_layer_of_cached_wheels_compiles_nothing(
    ws: Workspace, tmp_path: Path
) -> None:
    """A warm build (the lock's layer gone, its wheels and bytecode kept) links every pyc."""
    first, _ = await build(ws, "pyc1", tar_dir(EXAMPLES / "hello"))
    layer = ws.layers / first.layer_key
    site_dir = next((layer / "venv" / "lib").glob("python3.*/site-packages"))
    flask = site_dir / "flask" / "app.py"
    assert run_value_header(pyc_of(flask), flask)
    # The layer's pycs are the store's files, owned by the shared build user.
    store = bytecode.store_dir(ws.uv_cache)
    assert pyc_of(flask).stat().st_nlink >= 2 and store.stat().st_uid == ws.user.uid
    shutil.rmtree(layer)  # as when the lock changes: a new layer from the same wheels
    second, lines = await build(
        ws, "pyc2", tar_dir(EXAMPLES / "hello"), previous_lock_text=first.lock
    )
    assert second.installed is True
    said = next(ln for ln in lines if ln.startswith("       bytecode: "))
    n = int(said.split("bytecode: ")[1].split()[0])
    assert n > 100 and f"{n} modules, {n} reused, 0 compiled" in said
    # Where its time went, for bench/build.py.
    phases = {"layer.jail", "layer.venv", "layer.sync", "layer.bytecode", "layer.pack"}
    assert phases | {"pack.wait"} <= second.step_times.keys()
    # Packed with its bytecode: the same blob as the first layer.
    assert second.layer_digest == first.layer_digest
    assert os.path.samefile(pyc_of(flask), next(iter(_entries(store, flask, site_dir))))


def run_value_header(pyc: Path, src: Path) -> bool:
    data = pyc.read_bytes()
    return (
        data[:4] == importlib.util.MAGIC_NUMBER
        and int.from_bytes(data[4:8], "little") == 0b11
        and data[8:16] == importlib.util.source_hash(src.read_bytes())
    )


def _entries(store: Path, src: Path, site_dir: Path) -> list[Path]:
    key = script.key(str(src.relative_to(site_dir)), src.read_bytes())
    return list(store.glob(f"*/{key[:2]}/{key}"))
