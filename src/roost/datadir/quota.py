"""A per-app quota on its live data directory: each app's tree is a file
system of its own, an ext4 image of the quota's size mounted on `ROOT/<app>`.

Why an image: the host's file system here has no project quotas (ext4
without `prjquota`, which cannot be turned on while mounted), and a tree
shared by an app's uid and nothing else could use user quotas only if the
host's root file system had them on. An image needs nothing of the host but
loop devices, and the kernel enforces it: a write past it is ENOSPC, to that
app alone, while its other files stay readable and the app keeps serving.

  IMAGES/<app>.ext4    the image (sparse: it takes what the app wrote)
  ROOT/<app>/          its mount point, the tree the app and its tools see
  ROOT/.<app>.pre-quota  the plain tree it had before it had a quota

Mounting is idempotent and shared by the roles of one host (the servicehost
mounts, and a runner beside it, which may start an instance first, too):
under a per-app lock, a tree that is a mount point already is left; an image
still attached to a loop device (its earlier mount detached while sandboxes
held it) is mounted from that device, so the one file system is never
mounted twice through two devices. Growing is online (resize2fs); a quota
below what is stored is refused, the tree left as it is (`plan`).
`release` detaches mounts lazily: sandboxes that still bind the tree keep
it until they end, and the loop device goes with the last of them.

Growing offline needs the tree unmounted everywhere it is mounted. Any
process that makes a mount namespace (`ip netns exec`, a systemd service
with PrivateTmp) copies the tree's mount, and keeps the copy as long as it
lives. So ROOT is made a shared mount before any tree is mounted on it
(`share_root`: bound on itself, then shared): the trees are shared too, a
namespace made afterwards with slave propagation holds slave copies, and
our unmount takes them along (roost.datadir.mountinfo says which copies do
not hold the tree; a copy with a file open in it makes our unmount fail
with EBUSY: in use). A sandbox's bind of the tree is a slave of the tree,
not a mount under a copy of ROOT: it holds the tree, and a tree mounted
later does not reach into another app's sandbox (nothing there receives
ROOT's mounts). Mounts under ROOT, and unmounting it, take `root.lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from roost.datadir import mountinfo
from roost.datadir.shared import app_tree

log = logging.getLogger("roost.datadir")

MB = 1 << 20
# ext4's own metadata (the journal, inode tables: about 4 MiB and 2%): added
# to the quota so that the app gets about what it was promised.
OVERHEAD_MB = 4
OVERHEAD_PART = 50  # 1/50th: 2%
MIN_QUOTA_MB = 4
TIMEOUT_S = 60.0
BOUND = "root.bound"  # in IMAGES: ROOT is bound on itself by share_root

Action = Literal["none", "create", "grow", "refuse"]


class QuotaError(RuntimeError):
    """The tree could not be given its quota (a tool failed, no loop device)."""


@dataclass(frozen=True)
class Usage:
    used_bytes: int
    quota_bytes: int  # what the app may store (the file system's size less its own)


def images_for(root: Path) -> Path:
    """Where the images of ROOT's apps live: beside ROOT, out of every app's sight."""
    return root.parent / f"{root.name}-images"


def image_bytes(quota_mb: int) -> int:
    q = max(quota_mb, MIN_QUOTA_MB)
    return (q + OVERHEAD_MB + q // OVERHEAD_PART) * MB


def plan(quota_mb: int, image_size: int | None, used_bytes: int) -> Action:
    """What to do with an app's image (pure): `image_size` None when it has none."""
    want = image_bytes(quota_mb)
    if image_size is None:
        return "create"
    if want > image_size:
        return "grow"
    if want < image_size and used_bytes > quota_mb * MB:
        return "refuse"  # shrinking under what is stored: never
    return "none"  # smaller but it fits: kept, ext4 does not shrink online


def _run(*argv: str, ok: tuple[int, ...] = (0,)) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QuotaError(f"{argv[0]}: {exc}") from None
    if r.returncode not in ok:
        raise QuotaError(f"{' '.join(argv[:2])}: {(r.stderr or r.stdout).strip()}")
    return r.stdout


@contextlib.contextmanager
def _locked(images: Path, app: str) -> Iterator[None]:
    with open(images / f".{app}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _root_locked(images: Path, root: Path) -> Iterator[None]:
    """Shared by every call that mounts under ROOT; exclusive while ROOT is
    made shared or unmounted (`release`), so that no tree is mounted on a
    ROOT that is being unmounted. ("root.lock": no app's lock is named so.)"""
    with open(images / "root.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH)
        if not _root_is_shared(root):
            # Not atomic (flock converts by unlocking first): checked again.
            fcntl.flock(fh, fcntl.LOCK_EX)
            share_root(root)
        yield


def _own_mounts() -> tuple[mountinfo.Mount, ...]:
    try:
        with open("/proc/self/mountinfo") as fh:
            return mountinfo.parse(fh.read())
    except (OSError, mountinfo.MountinfoError) as exc:
        raise QuotaError(f"mountinfo: {exc}") from None


def _root_is_shared(root: Path) -> bool:
    try:
        m = mountinfo.mount_at(_own_mounts(), os.path.realpath(root))
    except QuotaError:
        return False  # share_root says why
    return m is not None and m.shared is not None


def share_root(root: Path) -> None:
    """Make ROOT a shared mount (bound on itself first when it is not a mount
    point); idempotent. Not when trees are mounted under a ROOT that is not a
    mount point yet (mounted before this): binding ROOT would hide them with
    their devices; it is shared once they are released. A failure is logged:
    the trees work as before, only offline growth waits for other
    namespaces' copies."""
    point = os.path.realpath(root)
    try:
        mounts = _own_mounts()
        here = mountinfo.mount_at(mounts, point)
        if here is None:
            if any(m.point.startswith(point + "/") for m in mounts):
                log.info("%s: trees mounted before it was shared: shared once released", root)
                return
            _run("mount", "--bind", point, point)
            # Ours to unmount at `release` (not a mount an operator made).
            (images_for(root) / BOUND).write_text(f"{point}\n")
        if here is None or here.shared is None:
            _run("mount", "--make-shared", point)
    except QuotaError as exc:
        log.warning("%s: not made a shared mount (%s)", root, exc)


def attached_device(image: Path) -> str:
    """The loop device `image` is attached to ("" when none)."""
    out = _run("losetup", "-j", str(image))
    return out.split(":", 1)[0].strip() if out.strip() else ""


def ensure(root: Path, app: str, quota_mb: int, owner: tuple[int, int] | None) -> Path:
    """`ROOT/<app>` mounted from its image of `quota_mb`, owned by `owner`
    (uid, gid) when new; grown when the quota grew. The tree."""
    tree = app_tree(root, app)
    images = images_for(root)
    images.mkdir(mode=0o700, exist_ok=True)
    image = images / f"{app}.ext4"
    with _root_locked(images, root), _locked(images, app):
        size = image.stat().st_size if image.exists() else None
        used = usage(tree).used_bytes if os.path.ismount(tree) else 0
        action = plan(quota_mb, size, used)
        if action == "create":
            with open(image, "wb") as fh:
                fh.truncate(image_bytes(quota_mb))
            # No reserved blocks (root's 5%): the app's quota is all its own.
            # The journal stays: a write the app fsync'd survives a crash.
            _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
        if action == "create" and tree.is_dir() and any(tree.iterdir()):
            # Kept in ROOT, not IMAGES: ROOT is a mount of its own (share_root),
            # and rename(2) does not cross mounts, even on one file system.
            _carry_over(tree, image, root / f".{app}.pre-quota")
        tree.mkdir(mode=0o700, exist_ok=True)
        if not os.path.ismount(tree):
            device = attached_device(image)
            if device:
                _run("mount", "-o", "nosuid,nodev", device, str(tree))
            else:
                _run("mount", "-o", "loop,nosuid,nodev", str(image), str(tree))
            if owner is not None and os.stat(tree).st_uid == 0:
                os.chown(tree, *owner)  # a new file system's root is root's
            os.chmod(tree, 0o700)
            with contextlib.suppress(FileNotFoundError):
                (tree / "lost+found").rmdir()  # the app's tree holds its files only
        if action == "grow":
            _grow(tree, image, size or 0, image_bytes(quota_mb))
        elif action == "refuse":
            log.warning("%s: data quota %d MiB is below what it stores: unchanged", app, quota_mb)
    return tree


def _still_attached(image: Path, within_s: float = 2.0) -> str:
    """The loop device `image` is still attached to once an unmount has had
    `within_s` to release it ("" when none): a loop device set to clear
    itself at its last unmount is detached by the kernel a moment after
    `umount` returns, and mounting it meanwhile fails ("already mounted or
    mount point busy"), as a busy machine showed."""
    deadline = time.monotonic() + within_s
    while (device := attached_device(image)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return device


def _grow(tree: Path, image: Path, old: int, new: int) -> None:
    """Grow the image's file system to `new` bytes: online (needs
    CAP_SYS_RESOURCE, which a container may lack), else offline when no
    sandbox holds it any more; else it stays as it was, mounted, and grows
    at a later call once none does (every instance of the app stopped:
    `roost suspend`, `roost resume`), never failing a start."""
    with open(image, "r+b") as fh:
        fh.truncate(new)
    try:
        device = attached_device(image)
        _run("losetup", "-c", device)
        _run("resize2fs", device)
        return
    except QuotaError as exc:
        online = str(exc)
    try:
        # Asked before unmounting: a tree unmounted while sandboxes hold its
        # file system could not be mounted again beside them ("already
        # mounted or mount point busy"), leaving new instances no tree.
        if held_elsewhere(tree):
            raise QuotaError("the file system is in use by running processes of the app")
        try:
            _run("umount", str(tree))
        except QuotaError as exc:
            # EBUSY: a copy our unmount would take along has a file open.
            raise QuotaError(f"the file system is in use ({exc})") from None
        if _still_attached(image):  # held meanwhile: by a sandbox just started
            raise QuotaError("the file system is in use")
        # 1: it corrected something (the lost+found each tree goes without).
        _run("e2fsck", "-f", "-p", str(image), ok=(0, 1))
        _run("resize2fs", str(image))
    except QuotaError as exc:
        with open(image, "r+b") as fh:
            fh.truncate(old)  # the file system never reached past it
        log.warning("%s: the quota grows later (%s; %s)", tree.name, online, exc)
    finally:
        if not os.path.ismount(tree):
            device = _still_attached(image)
            _run("mount", "-o", "loop,nosuid,nodev" if not device else "nosuid,nodev",
                 device or str(image), str(tree))  # fmt: skip
            with contextlib.suppress(OSError):
                (tree / "lost+found").rmdir()


def held_elsewhere(tree: Path) -> bool:
    """Is the file system mounted on `tree` held by another mount namespace
    (a sandbox's bind of it), in a way our unmount would not undo? Each
    other namespace's mountinfo read once; the decision is
    roost.datadir.mountinfo's."""
    try:
        own_ns = os.readlink("/proc/self/ns/mnt")
        own_user = os.readlink("/proc/self/ns/user")
        own = _own_mounts()
    except (OSError, QuotaError):
        return True  # cannot tell: not unmounted on a guess
    seen = {own_ns}
    others = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
            if ns in seen:
                continue
            seen.add(ns)
            with open(f"/proc/{pid}/mountinfo") as fh:
                text = fh.read()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        try:
            locked = os.readlink(f"/proc/{pid}/ns/user") != own_user
        except OSError:
            locked = True  # gone meanwhile: its copies count, as before
        try:
            others.append(mountinfo.Namespace(mountinfo.parse(text), locked))
        except mountinfo.MountinfoError:
            return True  # cannot tell
    return mountinfo.holders(own, os.path.realpath(tree), others) > 0


def _carry_over(tree: Path, image: Path, kept: Path) -> None:
    """A tree that had files before it had a quota: they go into the new
    image (`cp -a`, as the app left them), the plain tree is kept aside."""
    staging = image.with_suffix(".staging")
    staging.mkdir(mode=0o700, exist_ok=True)
    _run("mount", "-o", "loop,nosuid,nodev", str(image), str(staging))
    try:
        _run("cp", "-a", "--no-dereference", f"{tree}/.", str(staging))
        st = tree.stat()
        os.chown(staging, st.st_uid, st.st_gid)
    finally:
        _run("umount", str(staging))
        staging.rmdir()
    os.rename(tree, kept)


def usage(tree: Path) -> Usage:
    st = os.statvfs(tree)
    total = st.f_blocks * st.f_frsize
    free = st.f_bfree * st.f_frsize
    return Usage(used_bytes=total - free, quota_bytes=total)


def mounted_apps(root: Path) -> list[str]:
    """The apps whose tree is mounted from an image now."""
    images = images_for(root)
    if not images.is_dir():
        return []
    apps = sorted(p.stem for p in images.glob("*.ext4"))
    return [a for a in apps if os.path.ismount(root / a)]


def detach(tree: Path) -> None:
    """Unmount `tree` lazily: sandboxes that bind it keep it until they end."""
    _run("umount", "-l", str(tree))


def release(root: Path) -> None:
    """Detach every app's mount (a servicehost that stops), then ROOT's bind
    on itself (`share_root`) when nothing is mounted under it any more."""
    images = images_for(root)
    if not images.is_dir():
        return
    with open(images / "root.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        for app in mounted_apps(root):
            with contextlib.suppress(QuotaError):
                detach(root / app)
        point = os.path.realpath(root)
        with contextlib.suppress(QuotaError):
            mounts = _own_mounts()
            bound = (images / BOUND).exists() and mountinfo.mount_at(mounts, point)
            if bound and not any(m.point.startswith(point + "/") for m in mounts):
                _run("umount", "-l", point)
                (images / BOUND).unlink()
