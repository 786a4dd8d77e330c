"""Dependency layers: a virtualenv per (lock, interpreter), built once, reused.

Theory of operation: a layer is created under `layers/.tmp-<key>-<pid>` (uv
venv --relocatable, then uv pip sync of the lock, as the build user; offline
first, from the shared uv cache, and online only when the cache lacks
something), packed once into `venv.tar`, a tar fragment of `venv/...` members
with no end-of-archive marker, and renamed to `layers/<key>` with a `ready`
file. An image is that fragment followed by a small tar of the code, so a
build whose lock is unchanged installs nothing and packs only its code. The
sha256 state after the fragment is kept in memory per layer, so the image
digest costs only the code's bytes too.

Creation of one key is serialized by a per-key lock; layers in use by a
running build are never pruned.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from roost.builder.errors import BuildError
from roost.builder.sandbox import base_env, run
from roost.builder.workspace import Workspace

TAR_FLAGS = ["-b", "1", "--format=gnu", "--owner=0", "--group=0", "--numeric-owner", "--sort=name"]
END_OF_ARCHIVE = 1024  # two zero blocks


def uv_env(ws: Workspace, home: Path) -> dict[str, str]:
    return base_env(
        home,
        {
            "UV_CACHE_DIR": str(ws.uv_cache),
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_PROGRESS": "1",
            "UV_NO_CONFIG": "1",
        },
    )


async def ensure_layer(
    ws: Workspace, lock_path: Path, key: str, home: Path, log: Callable[[str], None]
) -> tuple[Path, bool]:
    """The ready layer for `key`, and whether it had to be installed now."""
    final = ws.layers / key
    lock = ws.layer_locks.setdefault(key, asyncio.Lock())
    async with lock:
        if (final / "ready").exists():
            os.utime(final / "ready")
            return final, False
        tmp = ws.layers / f".tmp-{key[:16]}-{os.getpid()}-{time.monotonic_ns()}"
        tmp.mkdir()
        try:
            ws.user.chown(tmp)
            await _install(ws, tmp, lock_path, home, log)
            await asyncio.to_thread(pack_fragment, tmp, ws, key)
            (tmp / "ready").write_text(json.dumps({"key": key, "python": ws.interp.python_id}))
            os.chmod(tmp, 0o755)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                await asyncio.to_thread(shutil.rmtree, tmp, True)
        return final, True


async def _install(
    ws: Workspace, layer: Path, lock_path: Path, home: Path, log: Callable[[str], None]
) -> None:
    env = uv_env(ws, home)
    venv = layer / "venv"
    common = {"user": ws.user, "cwd": home, "env": env}
    done = await run(
        [ws.uv, "venv", "--relocatable", "--python", ws.interp.path, "--quiet", str(venv)],
        log=log,
        **common,  # type: ignore[arg-type]
    )
    if done.returncode != 0:
        raise BuildError(f"uv venv failed (exit {done.returncode})")
    sync = [ws.uv, "pip", "sync", "--python", str(venv / "bin" / "python"), str(lock_path)]
    # Offline first: with a warm cache this touches no network at all.
    done = await run([*sync, "--offline", "--quiet"], log=None, **common)  # type: ignore[arg-type]
    if done.returncode == 0:
        log("       installed from the local cache (offline)")
        return
    log("       some packages are not in the cache: downloading")
    done = await run(sync, log=log, **common)  # type: ignore[arg-type]
    if done.returncode != 0:
        raise BuildError(f"installing dependencies failed (uv pip sync exit {done.returncode})")


def pack_fragment(layer: Path, ws: Workspace, key: str) -> None:
    """Write layer/venv.tar (no end marker) and remember its sha256 state."""
    import subprocess

    out = layer / "venv.tar"
    proc = subprocess.Popen(
        ["tar", "-c", "-f", "-", *TAR_FLAGS, "-C", str(layer), "venv"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    h = hashlib.sha256()
    held = b""
    assert proc.stdout is not None
    with open(out, "wb") as fh:
        while chunk := proc.stdout.read(1 << 20):
            data = held + chunk
            cut = max(0, len(data) - END_OF_ARCHIVE)
            h.update(data[:cut])
            fh.write(data[:cut])
            held = data[cut:]
    err = proc.stderr.read() if proc.stderr else b""
    if proc.wait() != 0 or held != b"\0" * END_OF_ARCHIVE:
        raise BuildError(f"packing the virtualenv failed: {err.decode(errors='replace')[-500:]}")
    os.chmod(out, 0o644)
    ws.fragment_hashes[key] = h


def fragment_hash(ws: Workspace, layer: Path, key: str) -> Any:
    """A fresh sha256 object fed with the layer's fragment (cached state when known)."""
    h = ws.fragment_hashes.get(key)
    if h is None:
        h = hashlib.sha256()
        with open(layer / "venv.tar", "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        ws.fragment_hashes[key] = h
    return h.copy()


def prune_layers(ws: Workspace, keep: int) -> list[str]:
    """Remove the least recently used ready layers beyond `keep` (never in-use ones)."""
    ready = []
    for p in ws.layers.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if not p.name.startswith(".") and (p / "ready").exists():
                ready.append(((p / "ready").stat().st_mtime, p.name))
    ready.sort(reverse=True)
    removed = []
    for _, key in ready[keep:]:
        if ws.layers_in_use.get(key) or ws.layer_locks.get(key, asyncio.Lock()).locked():
            continue
        trash = ws.layers / f".tmp-prune-{key[:16]}-{time.monotonic_ns()}"
        os.replace(ws.layers / key, trash)
        shutil.rmtree(trash, ignore_errors=True)
        ws.fragment_hashes.pop(key, None)
        removed.append(key)
    return removed
