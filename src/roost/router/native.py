"""Whether the router's hot modules run compiled (Cython) or as plain Python.

The request path (`HOT` below) is compiled by Cython in pure Python mode: the
`.py` files stay the single source of truth (they run uncompiled, and mypy
reads them), and a `.pxd` beside each makes its classes extension types with
typed fields and C-level calls between them. `scripts/build-ext` (run by
`scripts/install`) compiles them in place, next to their sources, and writes
a manifest (`_native.json`) naming the hash of every hot `.py` and `.pxd` it
compiled and the size and mtime of every extension it produced.

An extension module beside a `.py` of the same name wins the import, so a
stale one would silently run old code. The router package therefore calls
`select()` when it is imported, before any hot module is: the compiled
modules are used only if the manifest matches the current sources and the
extensions on disk, all of them together (their `.pxd` files describe each
other's memory layout, so compiled and plain modules must not mix).
Otherwise an import hook sends the hot modules to their `.py` files and a
warning says why: an engineer who edits `client.py` and runs the tests runs
the code they wrote, just slower, until `scripts/install` rebuilds.

Generated `.c` files (under `build/`), the extensions and the manifest are
build products, never committed.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

log = logging.getLogger("roost.router")

PACKAGE = "roost.router"
HERE = Path(__file__).resolve().parent
# Compiled as one unit (see above); imported in this order by each other.
HOT = (
    "table",
    "balance",
    "stats",
    "scan",
    "sockwrite",
    "context",
    "upstream",
    "relay",
    "exchange",
    "client",
    "accesslog",
)
MANIFEST = "_native.json"
EXT_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]

COMPILED = False
STATUS = "not checked"


def source_digest(directory: Path, name: str) -> str:
    """What a compiled module was built from: its .py and its .pxd."""
    h = hashlib.sha256()
    for suffix in (".py", ".pxd"):
        p = directory / f"{name}{suffix}"
        h.update(p.read_bytes() if p.exists() else b"")
        h.update(b"\0")
    return h.hexdigest()


def extension_stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def manifest_for(directory: Path, cython_version: str) -> dict[str, object]:
    """The manifest of a build that just compiled every hot module in `directory`."""
    return {
        "ext_suffix": EXT_SUFFIX,
        "cython": cython_version,
        "modules": {
            name: {
                "source": source_digest(directory, name),
                "extension": extension_stamp(directory / f"{name}{EXT_SUFFIX}"),
            }
            for name in HOT
        },
    }


def stale_reason(directory: Path = HERE) -> str | None:
    """None when the compiled modules in `directory` are current, else why not."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return "not compiled (run scripts/install)"
    except (OSError, ValueError) as exc:
        return f"unreadable build manifest ({exc})"
    if manifest.get("ext_suffix") != EXT_SUFFIX:
        return f"compiled for another Python ({manifest.get('ext_suffix')})"
    modules = manifest.get("modules", {})
    for name in HOT:
        built = modules.get(name)
        if built is None:
            return f"{name} was not compiled"
        ext = directory / f"{name}{EXT_SUFFIX}"
        try:
            stamp = extension_stamp(ext)
        except FileNotFoundError:
            return f"{ext.name} is missing"
        if stamp != built.get("extension"):
            return f"{ext.name} is not the one the build produced"
        if source_digest(directory, name) != built.get("source"):
            return f"{name}.py or {name}.pxd changed since it was compiled"
    return None


class SourceFinder(importlib.abc.MetaPathFinder):
    """Imports the hot modules from their .py files, past any extension beside them."""

    def __init__(self, package: str, directory: Path, names: Sequence[str]) -> None:
        self.package = package
        self.directory = directory
        self.names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        pkg, _, name = fullname.rpartition(".")
        if pkg != self.package or name not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, self.directory / f"{name}.py")


def select() -> None:
    """Decide, once per process, whether the hot modules load compiled."""
    global COMPILED, STATUS
    if any(f"{PACKAGE}.{name}" in sys.modules for name in HOT):
        return  # already imported one way; mixing would break the types
    reason = stale_reason()
    if reason is None:
        COMPILED = True
        STATUS = "compiled with Cython"
        # Each extension imports the types it uses from the others when it
        # loads, so the import order matters (entering the cycle at exchange
        # finds client needing Exchange before it exists): load them all now,
        # from the top.
        importlib.import_module(f"{PACKAGE}.client")
        return
    STATUS = f"pure Python: {reason}"
    if any((HERE / f"{name}{EXT_SUFFIX}").exists() for name in HOT):
        # Stale extensions on disk would shadow the sources: route around them.
        sys.meta_path.insert(0, SourceFinder(PACKAGE, HERE, HOT))
        log.warning("router hot path runs as pure Python: %s", reason)


def modules_in_use() -> dict[str, str]:
    """The file each imported hot module came from (for tests and `status`)."""
    out = {}
    for name in HOT:
        mod = sys.modules.get(f"{PACKAGE}.{name}")
        if mod is not None:
            out[name] = str(getattr(mod, "__file__", ""))
    return out
