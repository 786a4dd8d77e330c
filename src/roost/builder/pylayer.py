"""The interpreter layer: an image carries the CPython its venv runs on.

Theory of operation. An image's venv links to its interpreter by absolute
path (`venv/bin/python`, pyvenv.cfg's `home`), and a pyenv build finds
libpython and its extension modules through an absolute RUNPATH: such an
installation works only at the path it was installed at. So the image
carries the installation itself, and a runner's sandbox binds it back at
that path (roost.runner.confine.interpreter_mount): the image names the
layer in its manifest (mounted at `python` in the image root) and the path
in roost-image.json (`python.prefix`). A runner thus needs no interpreter of
its own, and nothing of the host's is seen in its place. A relocatable
build (python-build-standalone, as uv installs it) is carried the same way.
Interpreters in the host's /usr are not carried: the sandbox binds /usr
from the runner host, which must then have the same one
(roost-image.json says `"carried": false`).

The layer is the installation's `bin`, `include` and `lib` without what no
app runs: the test suite, idle and turtledemo, the base site-packages (a
venv does not see it), the static libpython and optimized bytecode
(`.opt-1`/`.opt-2`; runners use the plain `.pyc`). About 75 MB for a
CPython 3.12; packed as dependency layers are (roost.builder.pack) but
with the installation's own mtimes, which its bytecode was checked against,
so one installation gives one blob and every image naming it shares it on a
runner. Packed once per builder and interpreter, under a
per-key lock: `DATA/builder/pythons/<key>.json` names the stored blob and is
written only once the blob is committed; a blob gone from the store (image
collection) is packed again. tar runs as the builder itself: the
installation is the operator's, and may sit in a directory the build user
cannot read (root's home).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

from roost.builder.interpreter import Interpreter
from roost.builder.layers import LayerBlob
from roost.builder.pack import FIXED_MTIME, LAYER_TAR_FLAGS, pack_tree, run_abortable
from roost.builder.sandbox import BuildUser
from roost.builder.workspace import Workspace
from roost.images.manifest import LayerRef

FORMAT = 2  # 2: the installation's mtimes kept
LAYER_PATH = "python"  # where the image root shows it (and the runner finds it)
MEMBERS = ("bin", "include", "lib")


def excludes(interp: Interpreter) -> list[str]:
    lib = f"lib/python{interp.minor}"
    return [
        *(f"--exclude={lib}/{d}" for d in ("test", "idlelib", "turtledemo", "site-packages")),
        f"--exclude={lib}/config-*/*.a",
        "--exclude=*.opt-1.pyc",
        "--exclude=*.opt-2.pyc",
    ]


def layer_key(interp: Interpreter) -> str:
    text = "\n".join([str(FORMAT), interp.python_id, interp.prefix, *excludes(interp)])
    return hashlib.sha256(text.encode()).hexdigest()


def manifest_entry(interp: Interpreter) -> dict[str, object]:
    """roost-image.json's `python`: what the venv runs on, and where a runner binds it."""
    return {
        "version": interp.version,
        "implementation": interp.implementation,
        "machine": interp.machine,
        "path": interp.path,
        "prefix": interp.prefix,
        "carried": interp.carried,
        "layer": LAYER_PATH if interp.carried else None,
    }


async def ensure_layer(ws: Workspace, interp: Interpreter) -> LayerBlob:
    """The stored blob of `interp`'s layer, packing it first when there is none."""
    key = layer_key(interp)
    ready = ws.root / "pythons" / f"{key}.json"
    async with ws.layer_locks.setdefault(f"python-{key}", asyncio.Lock()):
        blob = _read_ready(ws, ready)
        if blob is not None:
            return blob
        prefix = Path(interp.prefix)
        members = [m for m in MEMBERS if (prefix / m).is_dir()]
        # The installation's own mtimes, not the fixed one: its bytecode was
        # compiled against them (timestamp pycs), and with every source
        # dated 1980 each instance would compile the standard library anew
        # at every start, in a read-only tree that keeps none of it (0.27 s
        # more for gunicorn's imports, measured). Same host installation,
        # same bytes still.
        flags = [*(f for f in LAYER_TAR_FLAGS if f != FIXED_MTIME), *excludes(interp)]
        myself = BuildUser(name="builder", uid=os.getuid(), gid=os.getgid(), dropped=False)
        digest, size, _ = await run_abortable(
            lambda abort: pack_tree(ws.store, prefix, members, flags, myself, abort)
        )
        ready.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = ready.with_suffix(".tmp")
        body = {"format": FORMAT, "python": interp.python_id, "digest": digest, "size": size}
        tmp.write_text(json.dumps(body))
        os.replace(tmp, ready)
        return LayerBlob(digest=digest, size=size)


async def image_layers(ws: Workspace, interp: Interpreter) -> list[LayerRef]:
    """The manifest entry of `interp`'s layer; none for an interpreter that is not carried."""
    if not interp.carried:
        return []
    blob = await ensure_layer(ws, interp)
    return [LayerRef(digest=blob.digest, size=blob.size, path=LAYER_PATH, kind="interpreter")]


def _read_ready(ws: Workspace, ready: Path) -> LayerBlob | None:
    try:
        raw = json.loads(ready.read_text())
        blob = LayerBlob(digest=str(raw["digest"]), size=int(raw["size"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if raw.get("format") != FORMAT or not ws.store.has(blob.digest):
        return None
    return blob
