"""Each app's quota in a cluster's shared tree: a mount of its own.

Theory of operation. The ext4 image of roost.datadir.quota cannot live on
a shared file system (two hosts mounting one ext4 would corrupt it), and
SeaweedFS keeps no per-directory quota in its filer. What it has is a
quota per collection, enforced by `weed mount`: a mount given `-collection
APP -collectionQuotaMB N` puts every file it writes in collection APP and,
once the collection holds N MiB (`-df.logical`: the app's bytes, not the
two copies), answers further writes with ENOSPC, while reads go on.

So an app with a quota gets a mount of its own subtree (`-filer.path=/APP`)
mounted over ROOT/APP on every host that reaches the tree (its runners,
the servicehost), before any sandbox binds it: the app, its `run` sessions
and the rsync/scp/sftp sessions (as the app's user, on the servicehost)
all write through a mount that counts the same collection. The cost is a
weed process per app and host (measured idle: 25 to 42 MB USS, 100 MB RSS
of which most is the shared binary), paid only by apps with a quota. The
quota is checked by the mount every few seconds, not per write: a burst
may pass it by what it writes in that time.

A mount is found by its command line (as weednode adopts), so a daemon
that restarts neither mounts it twice nor unmounts it; one whose process
died (a dead FUSE entry) or whose quota changed is detached and mounted
again.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from roost.datadir import seaweed, weednode, weedplan
from roost.datadir.seaweed import Endpoint
from roost.datadir.shared import app_tree

MOUNT_TIMEOUT_S = 30.0
USAGE_EVERY_S = 30.0
# tree -> (when it was walked, its bytes then)
_walked: dict[Path, tuple[float, int]] = {}
STOP_GRACE_S = 10.0


class WeedQuotaError(OSError):
    pass


@dataclass(frozen=True)
class Usage:
    used_bytes: int
    quota_bytes: int


def mounts_here(data_dir: Path) -> bool:
    """Does this host mount the cluster's shared tree (DATA/appdata.json)?"""
    plan = weednode.load(data_dir)
    return plan is not None and plan.host in plan.volumes


def app_argv(data_dir: Path, root: Path, app: str, quota_mb: int) -> list[str]:
    plan = weednode.load(data_dir)
    if plan is None:
        raise WeedQuotaError(f"{data_dir / weedplan.PLAN_FILE} not found: no shared tree here")
    filer = Endpoint(plan.filer, plan.filer_port)
    tree = app_tree(root, app)
    cache = weedplan.home(data_dir) / "mount-cache" / app
    argv = seaweed.mount_argv(seaweed.weed_binary(), filer, tree, cache)
    argv = [f"-filer.path=/{app}" if a.startswith("-filer.path=") else a for a in argv]
    argv = [f"-filer={weedplan.mount_filer(plan)}" if a.startswith("-filer=") else a for a in argv]
    return [*argv, f"-collection={app}", f"-collectionQuotaMB={quota_mb}", "-df.logical"]


def ensure(data_dir: Path, root: Path, app: str, quota_mb: int, owner: tuple[int, int]) -> None:
    """ROOT/APP mounted with `quota_mb` (blocking: call it in a thread)."""
    argv = app_argv(data_dir, root, app, quota_mb)
    tree = app_tree(root, app)
    if seaweed.is_mounted(tree) and weednode.find(argv) is not None:
        return
    # Another quota's mount, or a dead one: detached (sandboxes holding it
    # keep it until they restart), its process ended.
    others = [p for p in weednode.mounts_under(root) if f"-dir={tree}" in (p.info["cmdline"] or [])]
    if os.path.ismount(tree) or others:
        weednode.detach(tree)
        weednode.end(others)
    tree.mkdir(mode=0o700, exist_ok=True)
    os.chown(tree, *owner)
    cache = weedplan.home(data_dir) / "mount-cache" / app
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    logs = weedplan.home(data_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(logs / f"mount-{app}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        # Detached as weednode's processes are: it outlives this daemon.
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
            cwd=weedplan.home(data_dir), start_new_session=True, close_fds=True,
            env=seaweed.process_env(logs),
        )  # fmt: skip
    finally:
        os.close(fd)
    deadline = time.monotonic() + MOUNT_TIMEOUT_S
    while not seaweed.is_mounted(tree):
        if proc.poll() is not None or time.monotonic() >= deadline:
            raise WeedQuotaError(
                f"the data directory of {app} could not be mounted with its quota "
                f"(see {logs / f'mount-{app}.log'})"
            )
        time.sleep(0.1)
    os.chown(tree, *owner)  # the mount's root is the subtree's own entry
    os.chmod(tree, 0o700)


def tree_bytes(tree: Path) -> int:
    """The bytes of the regular files under `tree` (their sizes, as the
    quota's `-df.logical` counts: SeaweedFS compresses what it stores, so
    the volumes' sizes say less than the app wrote). Links not followed."""
    total = 0
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue  # removed meanwhile
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def usage(data_dir: Path, root: Path, now: float | None = None) -> list[tuple[str, Usage]]:
    """Each app mounted with a quota under `root`: what it stores and may.
    A tree is walked at most every USAGE_EVERY_S (a status push is more often)."""
    if weednode.load(data_dir) is None:
        return []
    when = time.monotonic() if now is None else now
    out = []
    for p in weednode.mounts_under(root):
        argv = p.info["cmdline"] or []
        quota = _flag(argv, "-collectionQuotaMB")
        tree = Path(_flag(argv, "-dir"))
        if not quota or not seaweed.is_mounted(tree):
            continue
        cached = _walked.get(tree)
        if cached is None or when - cached[0] >= USAGE_EVERY_S:
            cached = _walked[tree] = (when, tree_bytes(tree))
        out.append((tree.name, Usage(cached[1], int(quota) << 20)))
    return sorted(out)


def _flag(argv: list[str], flag: str) -> str:
    return next((a.split("=", 1)[1] for a in argv if a.startswith(f"{flag}=")), "")
