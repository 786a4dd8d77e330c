"""Who else holds a mounted file system: /proc/PID/mountinfo read as data.

Theory of operation. An app's tree (roost.datadir.quota) is grown offline
only when unmounting it leaves its file system unused. Every process that
makes a mount namespace (`ip netns exec`, a systemd service with
PrivateTmp, a bubblewrap sandbox) starts with a copy of every mount of the
moment, the tree's among them, and the copy keeps the file system alive
after our unmount, unless our unmount takes it along. The kernel does that
(umount propagation) for a copy that is mounted at the corresponding place
under a mount that receives our parent's events: a peer or a slave of the
mount the tree is on. The tree's parent (the appdata root) is made a shared
mount for that reason (`quota.share_root`), so that a namespace made later
with MS_SLAVE holds only such copies.

So a mount of the tree's device in another namespace does NOT hold it when
  - its parent mount is in the propagation set of our tree's parent (a peer,
    `shared:P`, or a slave of it, `master:P`, or a slave of a group that is
    itself a slave of it: followed through every namespace given),
  - it is mounted at the same place within that parent's file system (the
    mount point relative to the parent's own root: a namespace that moved its
    root elsewhere still names the same directory),
  - nothing is mounted on or under it there (the kernel unmounts only a
    leaf copy), and
  - the namespace is not owned by another user namespace (its copies are
    locked, and a locked mount is not unmounted by propagation).
Everything else does: a sandbox binds the tree at the same path but on its
own tmpfs, not under a copy of the root, so its bind counts, as the app's
files are open in it. A copy that is busy (a file open in it) is not seen
here; our unmount then fails with EBUSY, and the caller says it is in use.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

_OCTAL = re.compile(r"\\([0-7]{3})")


class MountinfoError(ValueError):
    """A mountinfo line that is not one (the kernel's format is fixed)."""


@dataclass(frozen=True)
class Mount:
    mount_id: int
    parent_id: int
    dev: str  # "major:minor" of the file system
    root: str  # the directory of that file system mounted here
    point: str  # where, as the namespace's processes see it
    shared: int | None  # its peer group (shared:N)
    master: int | None  # the peer group it is a slave of (master:N)


@dataclass(frozen=True)
class Namespace:
    mounts: tuple[Mount, ...]
    # Owned by another user namespace than ours: its mounts are locked.
    locked: bool = False


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash as \ooo.
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse(text: str) -> tuple[Mount, ...]:
    """Each line of a /proc/PID/mountinfo (proc(5)), in order."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            shared = master = None
            for tag in fields[6:sep]:
                name, _, value = tag.partition(":")
                if name == "shared":
                    shared = int(value)
                elif name == "master":
                    master = int(value)
            out.append(
                Mount(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    dev=fields[2],
                    root=_unescape(fields[3]),
                    point=_unescape(fields[4]),
                    shared=shared,
                    master=master,
                )
            )
        except (ValueError, IndexError):
            raise MountinfoError(f"not a mountinfo line: {line!r}") from None
    return tuple(out)


def mount_at(mounts: Sequence[Mount], point: str) -> Mount | None:
    """The mount visible at `point` (the last mounted there), or None."""
    found = None
    for m in mounts:
        if m.point == point:
            found = m
    return found


def _place(m: Mount, parent: Mount) -> str:
    """Where `m` is mounted within its parent's file system."""
    return posixpath.normpath(posixpath.join(parent.root, posixpath.relpath(m.point, parent.point)))


def _receivers(group: int, others: Sequence[Namespace]) -> set[int]:
    """The peer groups our `group`'s mount events reach: itself, and every
    group of a shared mount that is a slave of one reached already."""
    reach = {group}
    grew = True
    while grew:
        grew = False
        for ns in others:
            for m in ns.mounts:
                if m.master in reach and m.shared is not None and m.shared not in reach:
                    reach.add(m.shared)
                    grew = True
    return reach


def holders(own: Sequence[Mount], tree: str, others: Sequence[Namespace]) -> int:
    """How many of `others` hold the file system mounted on `tree` (in our
    namespace, `own`) in a way our unmount of `tree` would not undo.
    A `tree` that is not a mount point here: every namespace that has the
    device of the mount at the deepest mount point above it counts (callers
    ask only about mounted trees)."""
    ours = mount_at(own, tree)
    if ours is None:
        return len(others)
    by_id = {m.mount_id: m for m in own}
    parent = by_id.get(ours.parent_id)
    reach = _receivers(parent.shared, others) if parent and parent.shared else set()
    place = _place(ours, parent) if parent else ""
    count = 0
    for ns in others:
        if any(_holds(m, ns, reach, place) for m in ns.mounts if m.dev == ours.dev):
            count += 1
    return count


def _holds(m: Mount, ns: Namespace, reach: set[int], place: str) -> bool:
    if ns.locked or not reach:
        return True
    there = {x.mount_id: x for x in ns.mounts}
    up = there.get(m.parent_id)
    if up is None or not ({up.shared, up.master} & reach):
        return True  # not under a copy of our parent: a bind of its own
    if _place(m, up) != place:
        return True
    # A mount on or under it keeps it (the kernel removes leaf copies only).
    return any(x.parent_id == m.mount_id for x in ns.mounts)
