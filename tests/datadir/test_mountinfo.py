"""Which copies of an app's tree hold it (roost.datadir.mountinfo): pure,
over /proc/PID/mountinfo text captured on this machine (kernel 6.18, root
file system private, the appdata root bound on itself and made shared, the
tree an ext4 image on /dev/loop0), from `unshare -m --propagation ...` and
a bubblewrap sandbox that binds the tree as roost.tenant.sandbox does."""

from __future__ import annotations

import pytest

from roost.datadir.mountinfo import Mount, MountinfoError, Namespace, holders, mount_at, parse

TREE = "/tmp/hqexp-Ym4K/appdata/a"
VDA = "ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534"

OWN = parse(f"""\
27 1 254:0 / / rw,relatime - {VDA}
87 27 254:0 /tmp/hqexp-Ym4K/appdata /tmp/hqexp-Ym4K/appdata rw,relatime shared:5 - {VDA}
88 87 7:0 / /tmp/hqexp-Ym4K/appdata/a rw,nosuid,nodev,relatime shared:6 - ext4 /dev/loop0 rw
""")

# unshare -m --propagation slave (ip netns exec, systemd's PrivateTmp): made
# after the tree was mounted on the shared root.
SLAVE = parse(f"""\
164 85 254:0 /tmp/hqexp-Ym4K/appdata /tmp/hqexp-Ym4K/appdata rw,relatime master:5 - {VDA}
165 164 7:0 / /tmp/hqexp-Ym4K/appdata/a rw,nosuid,nodev,relatime master:6 - ext4 /dev/loop0 rw
""")

# The same namespace, which also bound the tree elsewhere (/mnt).
SLAVE_AND_BIND = SLAVE + parse(
    "166 85 7:0 / /mnt rw,nosuid,nodev,relatime master:6 - ext4 /dev/loop0 rw\n"
)

# unshare -m --propagation private: a copy our unmount cannot reach.
PRIVATE = parse(f"""\
164 85 254:0 /tmp/hqexp-Ym4K/appdata /tmp/hqexp-Ym4K/appdata rw,relatime - {VDA}
165 164 7:0 / /tmp/hqexp-Ym4K/appdata/a rw,nosuid,nodev,relatime - ext4 /dev/loop0 rw
""")

# unshare -m --propagation unchanged: peers of ours.
PEER = parse(f"""\
164 85 254:0 /tmp/hqexp-Ym4K/appdata /tmp/hqexp-Ym4K/appdata rw,relatime shared:5 - {VDA}
165 164 7:0 / /tmp/hqexp-Ym4K/appdata/a rw,nosuid,nodev,relatime shared:6 - ext4 /dev/loop0 rw
""")

# A slave namespace that made its root shared again (shared:7 master:5), and
# a slave namespace made inside it (master:7): a chain our events travel.
MIDDLE = parse(f"""\
179 90 254:0 /tmp/hqexp-Ym4K/appdata /tmp/hqexp-Ym4K/appdata rw,relatime shared:7 master:5 - {VDA}
180 179 7:0 / /tmp/hqexp-Ym4K/appdata/a rw,nosuid,nodev,relatime master:6 - ext4 /dev/loop0 rw
""")
INNER = parse(f"""\
208 182 254:0 /tmp/hqexp-Ym4K/appdata /tmp/hqexp-Ym4K/appdata rw,relatime master:7 - {VDA}
209 208 7:0 / /tmp/hqexp-Ym4K/appdata/a rw,nosuid,nodev,relatime master:6 - ext4 /dev/loop0 rw
""")

# bwrap (0.8) binding the tree at the same path on its own tmpfs root.
SANDBOX = parse("""\
105 77 0:41 /newroot / rw,nosuid,nodev,relatime - tmpfs tmpfs rw
106 105 254:0 /usr /usr ro,nosuid,nodev,relatime - ext4 /dev/vda rw,discard
107 105 0:42 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
110 105 0:43 / /dev rw,nosuid,nodev,relatime - tmpfs tmpfs rw,mode=755
118 105 7:0 / /tmp/hqexp-Ym4K/appdata/a rw,nosuid,nodev,relatime master:6 - ext4 /dev/loop0 rw
""")

# Before this change: the root file system private, no bind on appdata, so
# the tree is private and so is every copy of it.
OWN_PRIVATE = parse(f"""\
27 1 254:0 / / rw,relatime - {VDA}
82 27 7:0 / /tmp/hqexp-Ym4K/appdata/a rw,nosuid,nodev,relatime - ext4 /dev/loop0 rw
""")
COPY_OF_PRIVATE = parse(
    "163 84 7:0 / /tmp/hqexp-Ym4K/appdata/a rw,nosuid,nodev,relatime - ext4 /dev/loop0 rw\n"
)


def ns(mounts: tuple[Mount, ...], locked: bool = False) -> Namespace:
    return Namespace(mounts, locked)


def test_parse_reads_the_optional_fields_and_escapes() -> None:
    m = OWN[2]
    assert (m.mount_id, m.parent_id, m.dev, m.root, m.point) == (88, 87, "7:0", "/", TREE)
    assert (m.shared, m.master) == (6, None)
    assert (MIDDLE[0].shared, MIDDLE[0].master) == (7, 5)
    (spaced,) = parse(r"90 27 7:1 / /srv/my\040app rw shared:9 - ext4 /dev/loop1 rw")
    assert spaced.point == "/srv/my app"
    assert mount_at(OWN, TREE) == m and mount_at(OWN, "/nowhere") is None
    with pytest.raises(MountinfoError):
        parse("27 1 254:0 / / rw,relatime ext4 /dev/vda rw")  # no separator
    with pytest.raises(MountinfoError):
        parse("x 1 254:0 / / rw - ext4 /dev/vda rw")


def test_a_slave_copy_under_a_copy_of_the_root_does_not_hold() -> None:
    assert holders(OWN, TREE, [ns(SLAVE)]) == 0
    assert holders(OWN, TREE, [ns(PEER)]) == 0  # peers: our unmount reaches them too
    assert holders(OWN, TREE, [ns(MIDDLE), ns(INNER)]) == 0  # slave of a slave


def test_copies_our_unmount_cannot_reach_hold() -> None:
    assert holders(OWN, TREE, [ns(PRIVATE)]) == 1
    assert holders(OWN, TREE, [ns(SLAVE_AND_BIND)]) == 1  # the bind on /mnt stays
    assert holders(OWN, TREE, [ns(SLAVE, locked=True)]) == 1  # a user namespace's: locked
    # Its chain's middle unseen (gone, or not ours to read): not counted on.
    assert holders(OWN, TREE, [ns(INNER)]) == 1
    assert holders(OWN, TREE, [ns(SLAVE), ns(PRIVATE), ns(SANDBOX)]) == 2


def test_a_sandboxs_bind_holds_though_it_is_a_slave_of_the_tree() -> None:
    assert SANDBOX[-1].master == OWN[2].shared and SANDBOX[-1].point == TREE
    assert holders(OWN, TREE, [ns(SANDBOX)]) == 1


def test_a_copy_with_a_mount_on_it_holds() -> None:
    covered = SLAVE + parse("170 165 0:50 / /tmp/hqexp-Ym4K/appdata/a/x rw - tmpfs tmpfs rw\n")
    assert holders(OWN, TREE, [ns(covered)]) == 1


def test_the_place_is_the_parents_own_directory_not_the_path_seen() -> None:
    """A namespace that sees the root's copy elsewhere (pivoted: /data) has
    its tree at the same place within it; elsewhere within it, it holds."""
    moved = parse(f"""\
164 85 254:0 /tmp/hqexp-Ym4K/appdata /data rw,relatime master:5 - {VDA}
165 164 7:0 / /data/a rw,nosuid,nodev,relatime master:6 - ext4 /dev/loop0 rw
""")
    assert holders(OWN, TREE, [ns(moved)]) == 0
    other_place = parse(f"""\
164 85 254:0 /tmp/hqexp-Ym4K/appdata /data rw,relatime master:5 - {VDA}
165 164 7:0 / /data/b rw,nosuid,nodev,relatime master:6 - ext4 /dev/loop0 rw
""")
    assert holders(OWN, TREE, [ns(other_place)]) == 1


def test_before_the_root_was_shared_every_copy_holds() -> None:
    tree = "/tmp/hqexp-Ym4K/appdata/a"
    assert holders(OWN_PRIVATE, tree, [ns(COPY_OF_PRIVATE)]) == 1
    assert holders(OWN_PRIVATE, tree, []) == 0
    assert holders(OWN, "/tmp/not-mounted", [ns(SLAVE)]) == 1  # not ours: cannot tell
