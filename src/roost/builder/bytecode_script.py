"""A dependency layer's bytecode, compiled once per source file and linked after.

Copied into the build and run by the layer's own interpreter with `-I -S`
(no site module, so no `.pth` file of the installed packages runs), as the
shared build user, in the install step's jail (roost.builder.bytecode).

Why: `uv pip sync --compile-bytecode` compiles every module of the venv
every time (2,300 files, 3.3 s of CPU for the benchmark's 15 requirements),
though a changed lock changes one or two packages. So each `.py` file under
site-packages is named by the sha256 of its path there and its bytes, and
its checked-hash pyc is kept in a store, `<store>/<tag>/<2 hex>/<sha256>`,
where `<tag>` names the interpreter (cache tag, magic number, exact
version). A file whose
pyc is stored gets a hard link to it (a copy across file systems); only the
others are compiled, in a few forked processes when there are many, and
stored.

A stored pyc is the bytes py_compile writes for that source: its header
records the source's hash (checked at every import, so a pyc never serves
other source), and the file name it records is the module's path inside
site-packages, not the layer's (the import system sets the real one when it
loads the code), so the same module gives the same pyc in any layer, and a
layer's blob stays the same bytes for the same lock.
Only this script, run as the shared build user from wheels alone (no package
code runs), writes the store: a pyc is code every app sharing the store runs.

Each module's key needs its source read and hashed (2,300 files, about
0.04-0.08 s of a warm build's 0.11-0.33 s here), though a layer's sources are
hard links into uv's cache, the same files from one layer to the next. So
the store keeps, per interpreter, an index from a source's identity (its
path in site-packages, device, inode, size, mtime in ns: uv writes each file
it unpacks, so its mtime is when, to the nanosecond) to its key, and a
source found there is not read. A wrong entry (only this user writes the
files: one rewritten in place with its mtime put back) costs no
correctness: a pyc records its source's hash, checked at every import, so
a module whose pyc is not its source's is compiled again at import.

The index is split by top-level name in site-packages (`django`, `six.py`),
one file each under `<store>/<tag>/ident/`: a layer loads only its own
packages' entries and writes only the files it added to. One index of the
whole builder's history grew with every app built there: at its bound of
100,000 entries it was 12 MB, loaded and written again by every layer
(0.6-0.9 s for a layer of 714 modules, against 0.05 s with the entries of
that layer alone, measured; `marshal.load` on a file, as it was read, took
0.8 s of it, `marshal.loads` of the bytes 0.06 s).

Output: one line, "bytecode: N modules, R reused, C compiled[, F not compilable]".
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import marshal
import os
import py_compile
import sys

# Below this many misses, forking costs more than it saves.
FORK_MIN = 64
# The identity index's directory beside an interpreter's pycs (not two hex
# digits: never taken for a directory of pycs), one file per top-level name.
INDEX_DIR = "ident"
# What an index file keeps besides this layer's entries: as many again three
# times over (a few other versions of the package, for other apps' layers),
# and a floor for packages of a few modules.
SHARD_KEEP = 3
SHARD_FLOOR = 256
# The single index file of earlier releases, removed when met.
OLD_INDEX = "index"
_HEX = frozenset("0123456789abcdef")


def interpreter_tag() -> str:
    """What a pyc depends on besides its source: this interpreter's bytecode."""
    magic = importlib.util.MAGIC_NUMBER.hex()
    return f"{sys.implementation.cache_tag}-{magic}-{sys.hexversion:x}"


def entry(store: str, key: str) -> str:
    return os.path.join(store, key[:2], key)


def modules(site: str) -> list[tuple[str, str, str]]:
    """(source, its pyc's path, its path in site-packages) of every module, sorted."""
    suffix = f".{sys.implementation.cache_tag}.pyc"
    out: list[tuple[str, str, str]] = []

    def walk(path: str, rel: str) -> None:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.is_symlink():
                continue  # uv never makes one; a link could lead out of the layer
            if e.is_dir():
                if e.name != "__pycache__":
                    walk(e.path, f"{rel}{e.name}/")
            elif e.name.endswith(".py") and e.is_file():
                pyc = f"{path}/__pycache__/{e.name[:-3]}{suffix}"
                out.append((e.path, pyc, rel + e.name))

    walk(site, "")
    return out


def key(name: str, data: bytes) -> str:
    """A stored pyc's name: its module's path in site-packages and its source.

    The path is in the key because the pyc records it (two modules of the
    same text in two places get two pycs, as a fresh compile gives them), so
    a layer's bytes never depend on which layer compiled a module first.
    """
    h = hashlib.sha256(name.encode("utf-8", "surrogateescape"))
    h.update(b"\0")
    h.update(data)
    return h.hexdigest()


def _key_of(path: str, name: str) -> str:
    with open(path, "rb") as fh:
        return key(name, fh.read())


Identity = tuple[str, int, int, int, int]


def _identity(path: str, name: str) -> Identity:
    st = os.stat(path, follow_symlinks=False)
    return (name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def shard_of(name: str) -> str:
    """The index file of a module by its path in site-packages: its top-level name's."""
    top = name.split("/", 1)[0]
    return hashlib.sha256(top.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def load_shard(path: str) -> dict[Identity, str]:
    """One index file (empty when missing or unreadable: its sources are read)."""
    try:
        with open(path, "rb") as fh:
            data = marshal.loads(fh.read())  # marshal.load(fh) reads in small pieces
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


def save_shard(path: str, old: dict[Identity, str], seen: dict[Identity, str]) -> None:
    """This run's entries, then the older ones the bound leaves room for
    (atomically); nothing written when `old` already holds them all."""
    if all(old.get(ident) == k for ident, k in seen.items()):
        return
    merged = dict(seen)
    bound = (SHARD_KEEP + 1) * len(seen) + SHARD_FLOOR
    for ident, k in old.items():
        if len(merged) >= bound:
            break
        merged.setdefault(ident, k)
    # A unique name: two builds' jails may give their scripts the same pid.
    tmp = f"{path}.{os.urandom(8).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            marshal.dump(merged, fh)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _pycache(pyc: str, made: set[str]) -> None:
    d = pyc.rpartition("/")[0]
    if d not in made:
        os.makedirs(d, mode=0o755, exist_ok=True)
        made.add(d)


def _place(stored: str, pyc: str) -> bool:
    """Put the stored pyc at `pyc` (its directory made): False when the store has none."""
    try:
        os.link(stored, pyc)
        return True
    except FileNotFoundError:
        return False
    except FileExistsError:
        os.unlink(pyc)
        return _place(stored, pyc)
    except OSError:
        # Another file system (a layer on disk, the store in memory): a copy.
        try:
            with open(stored, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return False
        tmp = f"{pyc}.{os.getpid()}.tmp"
        with open(tmp, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, pyc)
        return True


def _compile(items: list[tuple[str, str, str, str]], store: str | None) -> int:
    """Compile (source, pyc, name, stored path) items; the count that failed."""
    failed = 0
    for src, pyc, name, stored in items:
        try:
            py_compile.compile(
                src, cfile=pyc, dfile=name, doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
            )  # fmt: skip
        except (py_compile.PyCompileError, SyntaxError, ValueError, UnicodeError):
            failed += 1  # as compileall: the module just has no bytecode
            continue
        os.chmod(pyc, 0o644)
        if store is None:
            continue
        os.makedirs(os.path.dirname(stored), mode=0o755, exist_ok=True)
        tmp = f"{stored}.{os.getpid()}.tmp"
        try:
            os.link(pyc, tmp)
        except OSError:
            continue  # across file systems: this layer's pyc is not shared
        os.replace(tmp, stored)
    return failed


def _compile_parallel(items: list[tuple[str, str, str, str]], store: str | None, n: int) -> int:
    if n <= 1 or len(items) < FORK_MIN:
        return _compile(items, store)
    parts = [items[i::n] for i in range(n)]
    pids = []
    for part in parts[1:]:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = min(_compile(part, store), 100) + 2
            finally:
                os._exit(code)
        pids.append(pid)
    failed = _compile(parts[0], store)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code < 2:
            raise SystemExit("bytecode: a compiling process failed")
        failed += code - 2
    return failed


def run(site: str, store_root: str | None, workers: int) -> tuple[int, int, int, int]:
    """(modules, reused, compiled, not compilable) for the venv's site-packages."""
    store = os.path.join(store_root, interpreter_tag()) if store_root else None
    todo: list[tuple[str, str, str, str]] = []
    found = modules(site)
    reused = 0
    made: set[str] = set()
    index = os.path.join(store, INDEX_DIR) if store else ""
    known: dict[str, dict[Identity, str]] = {}  # by index file
    seen: dict[str, dict[Identity, str]] = {}
    for src, pyc, name in found:
        _pycache(pyc, made)
        stored = ""
        if store:
            shard = shard_of(name)
            if shard not in known:
                known[shard] = load_shard(os.path.join(index, shard))
                seen[shard] = {}
            ident = _identity(src, name)
            k = known[shard].get(ident)
            # A key names a path in the store (`entry`): sha256 hex, or read again.
            if not isinstance(k, str) or len(k) != 64 or not _HEX.issuperset(k):
                k = _key_of(src, name)
            seen[shard][ident] = k
            stored = entry(store, k)
        if store and _place(stored, pyc):
            reused += 1
        else:
            todo.append((src, pyc, name, stored))
    failed = _compile_parallel(todo, store, workers)
    if store and seen:
        try:
            os.makedirs(index, mode=0o755, exist_ok=True)
            for shard, entries in seen.items():
                save_shard(os.path.join(index, shard), known[shard], entries)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(store, OLD_INDEX))
        except OSError:
            pass  # an index not saved costs the next layer its reads, nothing more
    return len(found), reused, len(todo) - failed, failed


def main(argv: list[str]) -> None:
    site, store_root = argv[0], argv[1] if len(argv) > 1 and argv[1] else None
    n, reused, compiled, failed = run(site, store_root, os.cpu_count() or 1)
    bad = f", {failed} not compilable" if failed else ""
    print(f"bytecode: {n} modules, {reused} reused, {compiled} compiled{bad}")


if __name__ == "__main__":
    main(sys.argv[1:])
