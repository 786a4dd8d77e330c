"""What a tenant process of this runner may see and use (pure, but for `image_binds`).

One function per kind of process turns an assignment and the runner's
layout into a `roost.tenant` spec: the app's identity (from its id), the
paths its sandbox binds and its cgroup limits. Instances and `run`/cron
sessions differ only in their writable paths (a web instance also gets its
own socket directory) and their cgroup unit.

What is bound (see roost.tenant.sandbox for the rest):

  read-only   the image root and the shared layers it links to; the Python
              installation its venv points at: the image's own interpreter
              layer mounted at the path it was built at (`interpreter_mount`),
              else the host's; the app's home (its bundle_config.py files
              live under it)
  writable    the app's data directory; a web instance's socket directory

Ownership on disk, set by `prepare_dirs` before the spawn: the app's home
and bundle directories are root:app 0750 (the app reads its bundle_config,
cannot replace it), the data directory app:app 0700, a socket directory
app:app 0700 (root's router connects; no other tenant can).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from roost.datadir import quota, seaweed, swap, weedquota
from roost.runner.layout import Layout, safe_name
from roost.sysuser import chown_tree
from roost.tenant.cgroups import Limits
from roost.tenant.identity import Identity, IdentityError, identity_for
from roost.tenant.launch import TenantSpec
from roost.tenant.sandbox import SYSTEM_DIRS, SandboxSpec, interpreter_prefix
from roost.wire.messages import InstanceAssignment

log = logging.getLogger("roost.runner")


class ConfineError(RuntimeError):
    """The assignment cannot be confined (e.g. it carries no app id)."""


@dataclass(frozen=True)
class TenantDefaults:
    memory_mb: int = 256
    pids: int = 512
    cpu_weight: int = 100
    tmp_mb: int = 0
    # The host's build stack, hidden from every tenant (roost.tenant.toolmask).
    hidden_files: tuple[Path, ...] = ()
    hidden_dirs: tuple[Path, ...] = ()


def identity(a: InstanceAssignment) -> Identity:
    if a.app_id <= 0:
        raise ConfineError(
            f"the assignment of {a.app} carries no app id (a controller older than "
            "tenant isolation?): refusing to run it unconfined"
        )
    try:
        return identity_for(a.app_id, a.app)
    except IdentityError as exc:
        raise ConfineError(str(exc)) from None


def image_binds(image_root: Path) -> tuple[Path, ...]:
    """The image root, the layers it links to and its interpreter (reads the disk)."""
    out = [image_root]
    for entry in sorted(image_root.iterdir()):
        if entry.is_symlink() and entry.name != "data":
            target = Path(os.path.realpath(entry))
            if target.is_dir():
                out.append(target)
    prefix = interpreter_prefix(image_root / "venv")
    if prefix is not None and interpreter_mount(image_root) is None:
        out.append(prefix)
    return tuple(dict.fromkeys(out))


def interpreter_mount(image_root: Path) -> tuple[Path, Path] | None:
    """(the image's interpreter layer, the path the sandbox shows it at) when
    the image carries its interpreter (roost.builder.pylayer); else None.

    The path is roost-image.json's `python.prefix`, written by the builder
    (the app's code never could); one that is not a plain absolute path
    outside the system directories is not mounted.
    """
    try:
        python = json.loads((image_root / "roost-image.json").read_text()).get("python") or {}
        layer, prefix = python.get("layer"), python.get("prefix")
    except (OSError, ValueError, AttributeError):
        return None
    if not (isinstance(layer, str) and isinstance(prefix, str)) or "/" in layer:
        return None
    link, dest = image_root / layer, Path(prefix)
    plain = dest.is_absolute() and os.path.normpath(prefix) == prefix and ".." not in dest.parts
    if not plain or dest == Path("/") or any(dest.is_relative_to(d) for d in SYSTEM_DIRS):
        return None
    if not link.is_symlink() or not link.is_dir():
        return None
    return Path(os.path.realpath(link)), dest


def tenant_spec(
    a: InstanceAssignment,
    *,
    layout: Layout,
    unit: str,
    cwd: Path,
    image_paths: tuple[Path, ...],
    defaults: TenantDefaults,
    socket_dir: Path | None = None,
    image_mounts: tuple[tuple[Path, Path], ...] = (),
) -> TenantSpec:
    home = layout.app_home(a.app)
    writable = [layout.data_directory(a.app)]
    if socket_dir is not None:
        writable.append(socket_dir)
    return TenantSpec(
        identity=identity(a),
        sandbox=SandboxSpec(
            cwd=cwd,
            hostname=safe_name(a.app)[:63],
            readonly=(*image_paths, home),
            writable=tuple(writable),
            mounts=image_mounts,
            tmp_bytes=defaults.tmp_mb << 20,
            hidden_files=defaults.hidden_files,
            hidden_dirs=defaults.hidden_dirs,
        ),
        limits=Limits(
            memory_mb=a.memory_mb or defaults.memory_mb,
            pids=defaults.pids,
            cpu_weight=defaults.cpu_weight,
        ),
        unit=safe_name(unit),
    )


def _shared(layout: Layout) -> bool:
    """Is ROOT this host's mount of the cluster's shared tree, up now?"""
    root = layout.appdata_root
    return root is not None and weedquota.mounts_here(layout.data_dir) and seaweed.is_mounted(root)


def prepare_dirs(
    ident: Identity,
    layout: Layout,
    app: str,
    *,
    bundle_dir: Path | None,
    socket_dir: Path | None = None,
    chown: bool = True,
    data_quota_mb: int = 0,
) -> None:
    """Create the app's directories with the ownership described above.

    `chown` False (no root: nothing to give) only creates them.
    `data_quota_mb`: the app's own data quota (its assignment's), else the
    runner's ROOST_DATA_QUOTA_MB.
    """
    home = layout.app_home(app)
    data = layout.data_directory(app)
    quota_mb = data_quota_mb or layout.data_quota_mb
    if chown and quota_mb and layout.owns_tree and layout.appdata_root:
        # Mounted before any sandbox binds it: a bind of the bare directory
        # would be written under the mount, where no one else reads.
        try:
            quota.ensure(layout.appdata_root, app, quota_mb, (ident.uid, ident.gid))
        except quota.QuotaError as exc:
            raise ConfineError(f"the data directory of {app} has no quota: {exc}") from None
    elif chown and quota_mb and layout.appdata_root and _shared(layout):
        # A cluster's shared tree: a mount of the app's own subtree with its
        # quota (roost.datadir.weedquota), over ROOT/APP before any bind.
        try:
            weedquota.ensure(
                layout.data_dir, layout.appdata_root, app, quota_mb,
                (ident.uid, ident.gid),
            )  # fmt: skip
        except OSError as exc:
            raise ConfineError(f"the data directory of {app} has no quota: {exc}") from None
    for d in (home, data, bundle_dir, socket_dir):
        if d is not None:
            d.mkdir(parents=True, exist_ok=True)
    if bundle_dir is not None:
        (bundle_dir.parent).mkdir(parents=True, exist_ok=True)
    if not chown:
        return
    for d in (home, home / "bundle", bundle_dir):
        if d is not None and d.exists():
            os.lchown(d, 0, ident.gid)
            os.chmod(d, 0o750)
    if bundle_dir is not None:
        for f in bundle_dir.iterdir():
            if f.is_file() and not f.is_symlink():
                os.lchown(f, 0, ident.gid)
                os.chmod(f, 0o640)
    for d in (data, socket_dir):
        if d is not None:
            os.lchown(d, ident.uid, ident.gid)
            os.chmod(d, 0o700)
    pulled = home / "data"
    if data != pulled:
        # The live tree (issue 17): what the app wrote into this runner's
        # older pulled copy joins it, once; the copy is set aside.
        try:
            if swap.carry_over(pulled, data, (ident.uid, ident.gid)):
                log.info("%s: its files on this runner joined the live data directory", app)
        except (OSError, swap.SwapError) as exc:
            log.warning("%s: %s stays apart from the live data directory: %s", app, pulled, exc)


def give_tree(ident: Identity, root: Path) -> None:
    """Everything under `root` becomes the app's, as its instances may be
    changing it (`sysuser.chown_tree`: no link followed, even mid-walk)."""
    chown_tree(root, ident.uid, ident.gid, include_root=False)
