"""A dependency layer's blob: named first, stored behind (issue 21).

Theory of operation: a warm build waited for its layer's whole pack, GNU
tar writing some 110 MB into the store while a Python thread hashed the
file as it grew: 0.28-0.30 s on a quiet machine, the biggest part of a
warm build, though an image needs only the blob's digest to be named.
Filling a new file (the page cache, on disk or tmpfs) is what costs, more
than tar and sha256 together.

So `name_tree` runs the same tar into a pipe to `openssl dgst -sha256`
(SHA-NI where the CPU has it; no file written, no byte through Python):
the blob's digest and size (tar's --totals), in a third of the time
(medians 0.216 against 0.604 s at load 11, measured). The build names its
image with them and ends; the layer's blob is then stored by the usual
pack (`pack.pack_tree`: tar into the store, hashed as written), and the
layer becomes ready only if that blob is the one named: tar's output is
the same bytes for the same tree (sorted names, fixed owners and mtime),
and the tree is the shared build user's, who runs nothing after the
install. A blob that differs is not kept and the layer not made ready.

While it is stored, the copy streams (`Workspace.storing`, `Storing`):
the builder's image store answers a chunk request for it from the part of
the store's temporary file tar has written (`serve_while_storing`; a
write extends the file's size only past bytes already in it), and from
the store once it is committed, so a copy to a second host asked for as the
build ends starts at once and never outruns the pack. The receiver checks
the whole blob against its digest as for any copy: a release is still
made only once a second host holds a verified copy of its image (and a
blob that is not the one named is refused there). Without an openssl
executable the layer is named once stored, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roost.builder.errors import BuildError
from roost.builder.pack import end_process
from roost.builder.sandbox import BuildUser
from roost.images.digest import format_digest
from roost.images.serve import MAX_CHUNK
from roost.wire.messages import ImageChunk, ImageChunkRequest

OPENSSL = shutil.which("openssl")
# How long a chunk request waits for its bytes while the blob is stored, and
# how often it looks at what tar has written.
STORING_WAIT_S = 10.0
_LOOK_S = 0.005
_TOTAL = re.compile(rb"Total bytes written: (\d+)")
_HEX = re.compile(r"[0-9a-f]{64}")


def name_tree(
    cwd: Path, members: list[str], flags: list[str], user: BuildUser, abort: threading.Event
) -> tuple[str, int]:
    """The (digest, size) of the tar of `members` of `cwd`, nothing stored (blocking).

    Both processes run as the build user (who wrote the tree); a set
    `abort` kills them.
    """
    if OPENSSL is None:
        raise BuildError("internal: no openssl executable to name a layer with")
    who: dict[str, Any] = (
        {"user": user.uid, "group": user.gid, "extra_groups": []} if user.dropped else {}
    )
    # tar's --totals line is read back: in English whatever the builder's locale.
    env = {**os.environ, "LC_ALL": "C"}
    with tempfile.TemporaryFile() as complaints, tempfile.TemporaryFile() as said:
        tar = subprocess.Popen(
            ["tar", "-c", "-f", "-", *flags, "--totals", "-C", str(cwd), "--", *members],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=complaints,
            cwd="/", env=env, **who,
        )  # fmt: skip
        dgst: subprocess.Popen[bytes] | None = None
        try:
            assert tar.stdout is not None
            dgst = subprocess.Popen(
                [OPENSSL, "dgst", "-sha256", "-r"],
                stdin=tar.stdout, stdout=said, stderr=subprocess.DEVNULL, cwd="/", **who,
            )  # fmt: skip
            tar.stdout.close()  # openssl holds the pipe's reading end now
            _wait(dgst, abort)
            _wait(tar, abort)
        finally:
            for left in (dgst, tar):
                if left is not None:
                    end_process(left)
        complaints.seek(0)
        err = complaints.read()
        said.seek(0)
        out = said.read(4096)
    if tar.returncode != 0:
        raise BuildError(f"packing {cwd.name} failed: {err.decode(errors='replace')[-500:]}")
    assert dgst is not None
    hexd = out.decode(errors="replace").split(" ", 1)[0].strip()
    total = _TOTAL.search(err)
    if dgst.returncode != 0 or not _HEX.fullmatch(hexd) or total is None:
        raise BuildError(f"naming {cwd.name} failed: openssl said {out[:200]!r}")
    return format_digest(hexd), int(total.group(1))


def _wait(proc: subprocess.Popen[bytes], abort: threading.Event) -> None:
    """Until `proc` exits; BuildError when `abort` is set first."""
    while True:
        if abort.is_set():
            raise BuildError("build cancelled")
        try:
            proc.wait(timeout=0.02)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Storing:
    """A blob named and being stored: its size, the temporary file tar fills
    (set once it exists), and `done`, resolved when it is committed or failed."""

    size: int
    done: asyncio.Future[None]
    tmp: Path | None = field(default=None)


async def serve_while_storing(entry: Storing, msg: ImageChunkRequest) -> ImageChunk | None:
    """The chunk from what is written of the blob so far, once that far; None when the
    blob is stored (or failed) first, or after STORING_WAIT_S: the store answers then."""
    if msg.offset < 0 or msg.length <= 0 or msg.offset >= entry.size:
        end = -1  # nothing to serve early: the store's answer, once it can give one
    else:
        end = min(msg.offset + min(msg.length, MAX_CHUNK), entry.size)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STORING_WAIT_S
    while not entry.done.done() and (left := deadline - loop.time()) > 0:
        tmp = entry.tmp
        if end > 0 and tmp is not None:
            data = await asyncio.to_thread(_written, tmp, msg.offset, end)
            if data is not None:
                return ImageChunk(digest=msg.digest, offset=msg.offset, total=entry.size, data=data)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(entry.done), min(_LOOK_S, left))
    return None


def _written(tmp: Path, start: int, end: int) -> bytes | None:
    """Bytes [start, end) of the growing file, once it holds them; None before (or gone)."""
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # committed (or failed) meanwhile
    try:
        if os.fstat(fd).st_size < end:
            return None
        return os.pread(fd, end - start, start)
    finally:
        os.close(fd)
