"""Packing an image: the layer's packed venv, then a tar of the code, hashed as written.

Runs in a worker thread. The image lands in the store only complete and under
its digest; `abort` (set when the build is cancelled) is checked before the
commit, and every digest committed is reported in `committed` so a build that
dies after a commit can still remove what it stored.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

from roost.builder.errors import BuildError
from roost.builder.layers import TAR_FLAGS, fragment_hash
from roost.builder.workspace import Workspace
from roost.images.digest import format_digest


def pack_image(
    ws: Workspace,
    layer: Path,
    key: str,
    image_root: Path,
    members: list[str],
    abort: threading.Event,
    committed: list[str],
) -> tuple[str, int]:
    h = fragment_hash(ws, layer, key)
    tmp = ws.store.new_tmp_path()
    try:
        shutil.copyfile(layer / "venv.tar", tmp)  # sendfile: no trip through Python
        proc = subprocess.Popen(
            ["tar", "-c", "-f", "-", *TAR_FLAGS, "-C", str(image_root), *members],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        with open(tmp, "ab") as fh:
            while chunk := proc.stdout.read(1 << 20):
                h.update(chunk)
                fh.write(chunk)
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise BuildError(f"packing the image failed: {err.decode(errors='replace')[-500:]}")
        size = os.path.getsize(tmp)
        digest = format_digest(h.hexdigest())
        if abort.is_set():
            raise BuildError("build cancelled")
        ws.store.commit(tmp, digest)
        committed.append(digest)
        return digest, size
    finally:
        if tmp.exists():
            tmp.unlink()


def store_untrusted_file(
    ws: Workspace, path: Path, limit: int, abort: threading.Event, committed: list[str]
) -> str:
    """Store a file the build user wrote, without following a planted symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise BuildError(f"static bundle missing or not a plain file: {exc}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not (st.st_mode & 0o170000 == 0o100000):
            raise BuildError("static bundle is not a regular file")
        if st.st_size > limit:
            raise BuildError(f"static bundle is larger than {limit} bytes")
        with ws.store.writer() as w:
            while chunk := fh.read(1 << 20):
                w.write(chunk)
            if abort.is_set():
                raise BuildError("build cancelled")
            digest = w.commit()
    committed.append(digest)
    return digest


def read_untrusted_text(path: Path, limit: int) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not (os.fstat(fh.fileno()).st_mode & 0o170000 == 0o100000):
            raise BuildError(f"{path.name} is not a regular file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise BuildError(f"{path.name} is larger than {limit} bytes")
    return data.decode("utf-8", "replace")
