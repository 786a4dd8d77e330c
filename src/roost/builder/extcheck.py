"""The build step "extensions": every compiled module in the image loads on a runner.

Each shared object in the dependency layer and the checkout (a file named
`*.so` or `*.so.N...` that is ELF) has its NEEDED entries resolved the way
the dynamic loader will resolve them on a runner, `ldd`-style but without
running anything of it:

  1. the object's own search path (DT_RUNPATH, else DT_RPATH), where an
     entry counts only when it is `$ORIGIN`-relative and stays inside the
     tree: that is how a manylinux wheel finds the libraries it carries in
     `<pkg>.libs/`. An absolute entry names a directory of the builder, not
     of the image, and counts for nothing;
  2. the runner stack (roost.builder.stacks.RUNNER_STACK): the libraries
     every runner host has.

A NEEDED entry found in neither fails the build, naming the module and the
library ("venv/lib/.../_x.so needs libfoo.so.1, which the runner stack does
not have"), instead of an instance crashing at import on a runner. A `.so`
that starts like ELF but does not hold together fails it too. Files are
opened without following links and read in bounded pieces
(roost.builder.elfdeps); nothing of them runs.

A dependency layer that passed is not scanned again when a later build
reuses it (a code-only deploy: 0.09-0.22 s of a 0.16-0.41 s build,
measured): `passed` records, in the layer's directory (the builder's, out
of the build user's reach), what the verdict depended on besides the
layer's files, which no one changes once it is ready: this check's format
and the runner stack. A layer that failed is scanned, and fails, again.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from roost.builder.elfdeps import DynamicInfo, ElfError, read_dynamic
from roost.builder.errors import BuildError
from roost.builder.stacks import RUNNER_SONAMES, runner_has

_SHARED_OBJECT = re.compile(r"\.so(\.[0-9][0-9A-Za-z.]*)?$")
_ORIGIN = re.compile(r"^\$(ORIGIN|\{ORIGIN\})(?=/|$)")
# Lines of problems shown in the build log before "... and N more".
_SHOWN = 20
# Bump when what a scan checks changes: layers' recorded verdicts are then stale.
CHECK_FORMAT = 1
PASSED = "extensions-passed"


@dataclass
class Scan:
    """What one tree's shared objects need, and what of it nothing provides."""

    objects: int = 0
    carried: int = 0  # NEEDED entries found inside the tree
    problems: list[str] = field(default_factory=list)


def search_dirs(origin: str, info: DynamicInfo) -> list[str]:
    """The object's own directories that exist in the image, relative to the tree.

    `origin`: the object's directory relative to the tree ("" at its top).
    """
    out = []
    for entry in info.search_path:
        m = _ORIGIN.match(entry)
        if m is None:
            continue  # absolute (the builder's), relative to the cwd, or $LIB/$PLATFORM
        rel = posixpath.normpath(posixpath.join(origin, entry[m.end() :].lstrip("/")))
        if rel == ".." or rel.startswith("../"):
            continue
        out.append("" if rel == "." else rel)
    return out


def unresolved(
    origin: str, info: DynamicInfo, present: Callable[[str], bool]
) -> tuple[list[str], int]:
    """(NEEDED entries nothing provides, how many the tree itself provides)."""
    dirs = search_dirs(origin, info)
    missing, carried = [], 0
    for soname in info.needed:
        if "/" not in soname and any(present(posixpath.join(d, soname)) for d in dirs):
            carried += 1
        elif not runner_has(soname):
            missing.append(soname)
    return missing, carried


def scan_tree(root: Path, label: str) -> Scan:
    """Every shared object under `root` (links not followed), resolved as above.

    `label`: how the tree is named in the image ("venv", the checkout's name).
    """
    out = Scan()
    real_root = os.path.realpath(root)

    def present(rel: str) -> bool:
        path = os.path.join(real_root, rel)
        real = os.path.realpath(path)
        return (real == real_root or real.startswith(real_root + os.sep)) and os.path.isfile(real)

    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        origin = os.path.relpath(dirpath, root)
        origin = "" if origin == "." else origin
        for name in sorted(filenames):
            if not _SHARED_OBJECT.search(name):
                continue
            rel = posixpath.join(origin, name) if origin else name
            try:
                info = _read(os.path.join(dirpath, name))
            except ElfError as exc:
                out.problems.append(f"{label}/{rel} is not a loadable shared object: {exc}")
                continue
            except OSError:
                continue  # vanished or unreadable: nothing the loader would find either
            if info is None:
                continue  # a linker script or data named .so: the loader never maps it
            out.objects += 1
            missing, carried = unresolved(origin, info, present)
            out.carried += carried
            out.problems += [
                f"{label}/{rel} needs {soname}, which the runner stack does not have"
                for soname in missing
            ]
    return out


def _read(path: str) -> DynamicInfo | None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        return read_dynamic(f, st.st_size)


def scan_all(trees: list[tuple[str, Path]]) -> Scan:
    """Each (label, tree) scanned, the results together (blocking)."""
    return merge([scan_tree(root, label) for label, root in trees])


def merge(scans: list[Scan]) -> Scan:
    total = Scan()
    for one in scans:
        total.objects += one.objects
        total.carried += one.carried
        total.problems += one.problems
    return total


def report(found: Scan, log: Callable[[str], None]) -> None:
    """Log what was found; BuildError naming the first problem."""
    if found.problems:
        for line in found.problems[:_SHOWN]:
            log("       " + line)
        if len(found.problems) > _SHOWN:
            log(f"       ... and {len(found.problems) - _SHOWN} more")
        more = f" (and {len(found.problems) - 1} more)" if len(found.problems) > 1 else ""
        raise BuildError(found.problems[0] + more)
    if not found.objects:
        log("       no compiled modules")
        return
    carried = f", {found.carried} of their libraries carried in the image" if found.carried else ""
    log(f"       {found.objects} shared objects load on the runner stack{carried}")


class EarlyScan:
    """One tree's scan started before its step, in a thread (see Build.install)."""

    def __init__(self) -> None:
        self.label = ""
        self._task: asyncio.Task[Scan] | None = None

    def start(self, root: Path, label: str) -> None:
        if self._task is None:
            self.label = label
            self._task = asyncio.create_task(asyncio.to_thread(scan_tree, root, label))

    async def result(self) -> Scan | None:
        return None if self._task is None else await self._task

    async def close(self) -> None:
        """Wait for a scan no step took (a thread: it cannot be stopped)."""
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            await asyncio.wait([task])
            raise
        finally:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a failed scan is its step's to report


def verdict_key() -> str:
    """What a passed scan depended on besides the files: this check and the runner stack."""
    h = hashlib.sha256(f"{CHECK_FORMAT}".encode())
    for soname in sorted(RUNNER_SONAMES):
        h.update(b"\0" + soname.encode())
    return h.hexdigest()


def passed(layer: Path) -> bool:
    """Whether the layer at `layer` passed this check, with today's runner stack."""
    try:
        return (layer / PASSED).read_text() == verdict_key()
    except OSError:
        return False


async def check_layer_and_code(
    trees: list[tuple[str, Path]],
    log: Callable[[str], None],
    early: EarlyScan,
    layer: Path,
    layer_label: str,
) -> None:
    """The step as a build runs it: the layer's tree (`layer_label`) only when it has
    not passed before; a pass is recorded in `layer` (see the module's docstring)."""
    if passed(layer):
        trees = [(label, root) for label, root in trees if label != layer_label]
        log(f"       the dependency layer passed when it was made: {layer_label} not scanned again")
    await check_image(trees, log, early)
    tmp = layer / f"{PASSED}.tmp"
    tmp.write_text(verdict_key())
    os.replace(tmp, layer / PASSED)


async def check_image(
    trees: list[tuple[str, Path]], log: Callable[[str], None], early: EarlyScan | None = None
) -> None:
    """The step: scan each (label, tree); BuildError naming the first problem.

    A tree `early` has scanned already is not scanned again.
    """
    first = None
    if early is not None and (first := await early.result()) is not None:
        trees = [(label, root) for label, root in trees if label != early.label]
    rest = await asyncio.to_thread(scan_all, trees)
    report(merge([first, rest]) if first is not None else rest, log)
