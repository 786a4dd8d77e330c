"""The dependency layer's bytecode store: where it is, how it is run, when it is pruned.

A layer carries its modules' bytecode (an image is read-only: without it
every instance compiles its imports at each start). uv's
`--compile-bytecode` compiled all of them at every install: 3.3 s of CPU of a
warm build whose own install took 0.15 s. roost.builder.bytecode_script
compiles each source file once and hard-links its pyc into every later layer
(see there for why a stored pyc is safe to share).

The store sits beside uv's cache (`<dir of the uv cache>/pyc-cache`: the
builder's tmpfs directory, or DATA/builder), so in the install step's jail
it lies in the one mount that already holds the layer and the cache, and a
link reaches it. It belongs to the shared build user, and only installs from
wheels alone use it; a layer whose packages build from source (as the app's
own build user) compiles its own bytecode and shares none.

Pruning (after each build, when none runs): a stored pyc no layer links to
(a link count of one) is removed, so the store holds what the kept layers
hold, and a layer pruned takes its bytecode with it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from roost.builder.bytecode_script import INDEX_DIR
from roost.builder.sandbox import BuildUser

SCRIPT = Path(__file__).with_name("bytecode_script.py")


def store_dir(uv_cache: Path) -> Path:
    return uv_cache.parent / "pyc-cache"


def ensure_store(uv_cache: Path, user: BuildUser) -> Path:
    """The store (made on first use, the build user's); its path."""
    d = store_dir(uv_cache)
    with contextlib.suppress(FileExistsError):
        d.mkdir(mode=0o700)
        user.chown(d)
    return d


def argv(python: str, script: Path, site_packages: Path, store: Path | None) -> list[str]:
    """The command that gives a layer its bytecode: isolated, no site module."""
    return [python, "-I", "-S", str(script), str(site_packages), str(store or "")]


def prune(store: Path) -> int:
    """Remove stored pycs no layer links to; the count removed (blocking)."""
    removed = 0
    try:
        tags = list(os.scandir(store))
    except OSError:
        return 0
    for tag in tags:
        if not tag.is_dir(follow_symlinks=False):
            continue
        for shard in os.scandir(tag.path):
            if not shard.is_dir(follow_symlinks=False) or shard.name == INDEX_DIR:
                continue  # the identity index holds no pyc
            for f in os.scandir(shard.path):
                with contextlib.suppress(OSError):
                    st = f.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and st.st_nlink <= 1:
                        os.unlink(f.path)
                        removed += 1
    return removed
