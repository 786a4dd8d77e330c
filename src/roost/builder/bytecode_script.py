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

Output: one line, "bytecode: N modules, R reused, C compiled[, F not compilable]".
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import py_compile
import sys

# Below this many misses, forking costs more than it saves.
FORK_MIN = 64


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
    for src, pyc, name in found:
        _pycache(pyc, made)
        stored = entry(store, _key_of(src, name)) if store else ""
        if store and _place(stored, pyc):
            reused += 1
        else:
            todo.append((src, pyc, name, stored))
    failed = _compile_parallel(todo, store, workers)
    return len(found), reused, len(todo) - failed, failed


def main(argv: list[str]) -> None:
    site, store_root = argv[0], argv[1] if len(argv) > 1 and argv[1] else None
    n, reused, compiled, failed = run(site, store_root, os.cpu_count() or 1)
    bad = f", {failed} not compilable" if failed else ""
    print(f"bytecode: {n} modules, {reused} reused, {compiled} compiled{bad}")


if __name__ == "__main__":
    main(sys.argv[1:])
