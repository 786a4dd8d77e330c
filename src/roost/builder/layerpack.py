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

Until it is stored, whoever needs the blob waits (`Workspace.storing`):
the builder's image store answers a chunk request for it once it is
(roost.builder.daemon), so a copy to a second host asked for as the build
ends gets the whole blob, verified there as any copy is: a release is
still made only once a second host holds a verified copy of its image.
Without an openssl executable the layer is named once stored, as before.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from roost.builder.errors import BuildError
from roost.builder.sandbox import BuildUser
from roost.images.digest import format_digest

OPENSSL = shutil.which("openssl")
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
                    _end(left)
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


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
