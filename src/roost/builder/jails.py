"""What each build step's sandbox binds (pure but for reading the venv's interpreter).

Two kinds of step (see roost.builder.sandbox):

  uv steps      resolve and install: the uv binary, the interpreter and the
                build's directory read-only; uv's cache and the layer being
                made writable. When both live in the builder's tmpfs they are
                bound as their common directory, one mount, since a hard link
                (how a layer shares the cache's files) cannot cross two.
  app steps     the import check and collectstatic, which run the app's code:
                the build's directory, the dependency layer and the
                interpreter read-only (a layer other apps reuse can never be
                changed from here); the checkout, the build's home, its static
                output and its own bytecode directory writable. No cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from roost.builder.sandbox import Jail
from roost.tenant.cgroups import Limits
from roost.tenant.launch import Tenancy
from roost.tenant.sandbox import interpreter_prefix


def interpreter_dirs(python: str) -> tuple[Path, ...]:
    """The installation `python` belongs to (outside /usr), to bind read-only."""
    real = Path(os.path.realpath(python))
    prefix = real.parent.parent if real.parent.name == "bin" else real.parent
    if prefix.is_relative_to("/usr") or prefix == Path("/"):
        return ()
    return (prefix,)


def venv_dirs(venv: Path) -> tuple[Path, ...]:
    prefix = interpreter_prefix(venv)
    return (Path(os.path.realpath(venv)), *((prefix,) if prefix else ()))


def _plain(paths: Iterable[Path]) -> tuple[Path, ...]:
    return tuple(dict.fromkeys(Path(os.path.realpath(p)) for p in paths))


def shared_parent(a: Path, b: Path) -> Path | None:
    """The common directory of `a` and `b` when it is more than a root-level one."""
    common = Path(os.path.commonpath([os.path.realpath(a), os.path.realpath(b)]))
    return common if len(common.parts) > 2 else None


def uv_jail(
    tenancy: Tenancy,
    unit: str,
    *,
    uv_bin: str,
    python: str,
    build_dir: Path,
    cache: Path,
    layer: Path | None,
    limits: Limits,
    writable: Iterable[Path] = (),
) -> Jail:
    more = list(writable)
    writable = [cache]
    if layer is not None:
        both = shared_parent(layer, cache)
        writable = [both] if both is not None else [layer, cache]
    writable += more
    uv_dir = Path(os.path.realpath(uv_bin)).parent
    readonly = [build_dir, uv_dir, *interpreter_dirs(python)]
    if uv_dir.is_relative_to("/usr"):
        readonly.remove(uv_dir)
    return Jail(tenancy, unit, readonly=_plain(readonly), writable=_plain(writable), limits=limits)


def app_jail(
    tenancy: Tenancy,
    unit: str,
    *,
    build_dir: Path,
    venv: Path,
    writable: Iterable[Path],
    limits: Limits,
) -> Jail:
    return Jail(
        tenancy,
        unit,
        readonly=_plain([build_dir, *venv_dirs(venv)]),
        writable=_plain(writable),
        limits=limits,
    )
