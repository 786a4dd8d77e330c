"""Hostile uploads: symlink tricks (CVE-2025-4517 among them) and setuid bits.

Extractions here are real: the extractor script runs as the build user,
exactly as a build's fetch step runs it, and the builder takes the tree back.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.builder import extract
from roost.builder.errors import BuildError
from roost.builder.extract import DIR, FILE, SYMLINK, Entry
from roost.builder.interpreter import choose
from roost.builder.pack import LAYER_TAR_FLAGS, TAR_FLAGS, pack_tree
from roost.builder.pipeline import Build
from roost.builder.sandbox import BuildUser, ensure_build_user
from roost.builder.upload import UploadLimits, check_upload, extract_upload, reclaim_tree
from roost.builder.workspace import Workspace
from roost.images.cache import ImageCache
from roost.images.fetch import store_fetcher
from roost.images.store import ImageStore
from roost.settings import Settings

from .conftest import EXAMPLES, tar_dir
from .test_build import RELEASE_PHASE

# Builds run as this app's own build user (b<id>-<app>), as the daemon's do.
APP_ID = 11

LIMITS = UploadLimits(max_upload_bytes=10 << 20)
SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


def make_tar(*members: tuple[str, str, str | bytes], mode: int = 0o644) -> bytes:
    """A tar of (name, kind, link or data) with kind one of dir, file, sym, hard."""
    types = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "sym": tarfile.SYMTYPE,
             "hard": tarfile.LNKTYPE}  # fmt: skip
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, extra in members:
            m = tarfile.TarInfo(name)
            m.type = types[kind]
            m.mode = 0o755 if kind == "dir" else mode
            data = extra.encode() if isinstance(extra, str) else extra
            if kind == "file":
                m.size = len(data)
                tf.addfile(m, io.BytesIO(data))
            else:
                m.linkname = extra if isinstance(extra, str) else ""
                tf.addfile(m)
    return buf.getvalue()


def cve_2025_4517(dest: Path, up: int, payload: str) -> bytes:
    """CPython's own test of CVE-2025-4517, aimed at `dest`: nested symlinks
    whose expansion passes PATH_MAX, so os.path.realpath (and with it
    tarfile's "data" filter before 3.11.13) stops resolving and judges the
    rest lexically; `escape` then really points `up` directories above
    `dest`, and `escape/<payload>` is written there."""
    steps = "abcdefghijklmnop"
    path_max = os.pathconf(dest.parent, "PC_PATH_MAX")
    component = "d" * ((path_max - len(str(dest)) - 1) // (len(steps) + 1))
    members: list[tuple[str, str, str | bytes]] = []
    path = ""
    for step in steps:
        members.append((os.path.join(path, component), "dir", ""))
        members.append((os.path.join(path, step), "sym", component))
        path = os.path.join(path, component)
    linkpath = os.path.join(*steps, "l" * 254)
    members.append((linkpath, "sym", os.path.join(*[".."] * len(steps))))
    members.append(("escape", "sym", os.path.join(linkpath, *[".."] * up)))
    members.append((f"escape/{payload}", "file", b"written outside the upload\n"))
    return make_tar(*members)


class Extractor:
    """extract_upload as the fetch step calls it, in a world-searchable directory."""

    def __init__(self, base: Path, user: BuildUser, python: str) -> None:
        self.base, self.user, self.python = base, user, python
        self.work = base / "builds" / "b1"
        self.dest = self.work / "src"

    async def __call__(self, archive: bytes) -> int:
        self.work.mkdir(parents=True, exist_ok=True)
        for d in (self.base / "builds", self.work):
            os.chmod(d, 0o755)
        return await extract_upload(
            archive, self.dest, LIMITS, user=self.user, python=self.python, work=self.work
        )


@pytest.fixture
def base() -> Iterator[Path]:
    # pytest's tmp dirs are 0700: the build user could not reach the script.
    d = Path(tempfile.mkdtemp(prefix="roost-upload-test-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def extractor(base: Path) -> Extractor:
    user = ensure_build_user(Settings().build_user)
    home = base / "home"
    home.mkdir()
    os.chmod(home, 0o755)
    interp = await choose("", user, home)
    return Extractor(base, user, interp.path)


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ------------------------------------------------------------ CVE-2025-4517


async def test_cve_2025_4517_upload_fails_the_build_and_writes_nothing_outside(
    ws: Workspace,
) -> None:
    build_id = "cve-2025-4517"
    dest = ws.builds / build_id / "src"
    # Three levels above the checkout: the builder's own directory.
    canary = ws.root / "roost-cve-2025-4517-canary"
    arch = cve_2025_4517(dest, 3, canary.name)
    lines: list[str] = []
    try:
        with pytest.raises(BuildError) as err:
            await Build(ws, build_id, "hello", arch, lines.append, app_id=APP_ID).run()
        assert not canary.exists(), "the upload wrote outside its checkout"
        assert "goes through symlink 'a'" in str(err.value)
        assert str(err.value).startswith("upload refused: member 'a/b/c/")
        assert any(ln.startswith("-----> fetch failed") for ln in lines)
        assert not (ws.builds / build_id).exists()
    finally:
        canary.unlink(missing_ok=True)


async def test_cve_2025_4517_is_refused_before_anything_is_written(
    extractor: Extractor, base: Path
) -> None:
    arch = cve_2025_4517(extractor.dest, 2, "canary")
    before = tree(base)
    with pytest.raises(BuildError, match="goes through symlink 'a'"):
        await extractor(arch)
    assert set(tree(base)) == set(before) | {"builds", "builds/b1"}
    assert not extractor.dest.exists()


async def test_the_extractor_refuses_it_on_its_own_as_the_build_user(
    extractor: Extractor, base: Path
) -> None:
    """The second gate: the script the build user runs checks what it reads,
    whatever the builder approved."""
    dest = base / "alone" / "src"
    dest.mkdir(parents=True)
    os.chmod(dest.parent, 0o755)
    extractor.user.chown(dest)
    arch = base / "cve.tar"
    arch.write_bytes(cve_2025_4517(dest, 2, "canary"))
    script = Path(extract.__file__)
    who = extractor.user
    kw = {"user": who.uid, "group": who.gid, "extra_groups": []} if who.dropped else {}
    with arch.open("rb") as stdin:
        proc = subprocess.run(
            [extractor.python, "-I", "-S", str(script), str(LIMITS.max_expanded_bytes)],
            stdin=stdin, capture_output=True, text=True, cwd=dest, check=False, **kw,
        )  # fmt: skip
    assert proc.returncode == 2
    assert "upload refused: member 'a/b/c/" in proc.stderr
    assert "goes through symlink 'a'" in proc.stderr
    assert not (base / "canary").exists()
    assert list(dest.iterdir()) == []


# ------------------------------------------------------------ symlink chains


@pytest.mark.parametrize(
    ("members", "why"),
    [
        # a/b -> . and a/b/c -> ..: every step lexically inside; a/b/c/x
        # is written through two symlinks.
        (
            [("a", "dir", ""), ("a/b", "sym", "."), ("a/b/c", "sym", ".."),
             ("a/b/c/x", "file", "x")],
            "member 'a/b/c' goes through symlink 'a/b'",
        ),
        ([("sub", "dir", ""), ("lnk", "sym", "sub"), ("lnk/f", "file", "x")],
         "member 'lnk/f' goes through symlink 'lnk'"),
        # Writing over a symlink writes through it.
        ([("in.txt", "file", "x"), ("link", "sym", "in.txt"), ("link", "file", "y")],
         "'link' is in the archive twice"),
        # A directory (with a file in it) later replaced by a symlink.
        ([("d/f", "file", "x"), ("d", "sym", ".")], "'d' is in the archive twice"),
        # c/d -> ../a/.. is inside lexically; through a -> . it is the parent.
        ([("a", "sym", "."), ("c/d", "sym", "../a/..")],
         "symlink 'c/d' -> '../a/..' leads out of the app directory through other symlinks"),
        ([("l1", "sym", "l2"), ("l2", "sym", "l1")], "loop"),
        ([("x", "file", "x"), ("s", "sym", "x"), ("h", "hard", "s")],
         "hard link 'h' -> 's' does not name a file extracted before it"),
        ([("h", "hard", "f"), ("f", "file", "x")], "does not name a file extracted before"),
        # The CVE's hard link trick: link to a file, then write through the link.
        ([("f", "file", "x"), ("h", "hard", "f"), ("h", "file", "y")],
         "'h' is in the archive twice"),
        ([("f", "file", "x"), ("h", "hard", "f"), ("f", "file", "y")],
         "'f' is in the archive twice"),
        ([("up", "sym", "sub/../../x")], "leaves the app directory"),
    ],
)  # fmt: skip
def test_members_through_symlinks_are_refused(
    members: list[tuple[str, str, str]], why: str
) -> None:
    with pytest.raises(BuildError, match="upload refused: .*" + re.escape(why)):
        check_upload(make_tar(*members), LIMITS)


async def test_member_through_a_symlink_is_refused_by_a_real_extraction(
    extractor: Extractor, base: Path
) -> None:
    arch = make_tar(("a", "dir", ""), ("a/b", "sym", "."), ("a/b/c", "sym", ".."),
                    ("a/b/c/x", "file", "x"))  # fmt: skip
    with pytest.raises(BuildError, match="goes through symlink 'a/b'"):
        await extractor(arch)
    assert not extractor.dest.exists()
    assert sorted(p.name for p in extractor.work.iterdir()) == []


def test_the_writer_never_follows_a_symlink_even_one_it_was_told_to(tmp_path: Path) -> None:
    """The last gate: a wrong plan still cannot write through a symlink (this
    one points inside, so tarfile's filter has nothing against it)."""
    dest = tmp_path / "dest"
    dest.mkdir()
    raw = make_tar(("sub", "dir", ""), ("lnk", "sym", "sub"), ("x", "file", "through"))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        sub, link, data = tf.getmembers()
        plan = [Entry("sub", DIR, member=sub), Entry("lnk", SYMLINK, "sub", member=link),
                Entry("lnk/x", FILE, mode=0o644, size=data.size, member=data)]  # fmt: skip
        top = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(OSError):
                extract.extract(tf, plan, top, str(dest))
        finally:
            os.close(top)
    assert tree(dest) == ["lnk", "sub"]


async def test_a_good_upload_is_unpacked_and_becomes_the_builders(extractor: Extractor) -> None:
    arch = make_tar(
        ("pkg/a.py", "file", "A = 1\n"),
        ("pkg/link", "sym", "a.py"),
        ("pkg/same", "hard", "pkg/a.py"),
        ("up", "sym", "pkg/../pkg/a.py"),
        ("notes.txt", "file", "first"),
        ("notes.txt", "file", "second"),  # given twice: the last copy wins, as with tar
        ("empty", "dir", ""),
        mode=0o6777,
    )
    assert await extractor(arch) == 6
    d = extractor.dest
    assert tree(d) == ["empty", "notes.txt", "pkg", "pkg/a.py", "pkg/link", "pkg/same", "up"]
    assert (d / "pkg" / "link").read_text() == "A = 1\n" and (d / "up").read_text() == "A = 1\n"
    assert (d / "notes.txt").read_text() == "second"
    assert os.stat(d / "pkg" / "same").st_ino == os.stat(d / "pkg" / "a.py").st_ino
    for p in [d, *d.rglob("*")]:
        st = os.lstat(p)
        assert st.st_uid == os.geteuid(), p  # taken back from the build user
        if not stat.S_ISLNK(st.st_mode):
            assert stat.S_IMODE(st.st_mode) & (SPECIAL_BITS | 0o022) == 0, (p, oct(st.st_mode))
    assert sorted(p.name for p in extractor.work.iterdir()) == ["src"]


# ------------------------------------------------------------ setuid bits


async def test_setuid_bits_set_by_build_code_do_not_survive_pack_and_unpack(
    ws: Workspace, tmp_path: Path
) -> None:
    """The app's code (run by the import check, as the build user who owns the
    checkout; a release phase follows, so the build imports it) makes a file
    setuid and a directory setgid, sticky and world writable; the image a
    runner unpacks as root has none of it."""
    app = (
        "import os\n"
        "os.chmod('tool', 0o6755)\n"
        "os.chmod('shared', 0o3777)\n"
        "from flask import Flask\n"
        "app = Flask(__name__)\n"
    )
    files = {"app.py": app, "tool": "#!/bin/sh\nid\n", "shared/readme": "x\n"}
    arch = tar_dir(EXAMPLES / "hello", {**files, **RELEASE_PHASE})
    lines: list[str] = []
    out = await Build(ws, "setuid", "hello", arch, lines.append, app_id=APP_ID).run()
    root = await ImageCache(tmp_path / "cache", 1 << 34).ensure(
        out.image_digest, store_fetcher(ws.store)
    )
    checkout = root / out.spec.checkout_name
    tool, shared = os.stat(checkout / "tool"), os.stat(checkout / "shared")
    assert stat.S_IMODE(tool.st_mode) & SPECIAL_BITS == 0, oct(tool.st_mode)
    assert stat.S_IMODE(shared.st_mode) & (SPECIAL_BITS | 0o022) == 0, oct(shared.st_mode)
    assert tool.st_mode & 0o100  # still executable
    assert tool.st_uid == os.geteuid()


@pytest.mark.parametrize("flags", [TAR_FLAGS, LAYER_TAR_FLAGS], ids=["code", "dependencies"])
def test_packed_layers_record_no_setuid_bit(base: Path, flags: list[str]) -> None:
    """Packing alone strips them (the runner's unpacking does too: tests/images)."""
    user = ensure_build_user(Settings().build_user)
    src = base / "tree"
    (src / "shared").mkdir(parents=True)
    (src / "tool").write_text("#!/bin/sh\nid\n")
    user.chown_tree(src)
    os.chmod(src / "tool", 0o6755)
    os.chmod(src / "shared", 0o3777)
    store = ImageStore(base / "store")
    digest, _, _ = pack_tree(store, src, ["shared", "tool"], flags, user, threading.Event())
    with tarfile.open(store.path(digest)) as tf:
        modes = {m.name: m.mode for m in tf.getmembers()}
    assert modes == {"shared": 0o755, "tool": 0o755}


def test_taking_the_tree_back_refuses_what_another_build_planted(base: Path) -> None:
    """Other builds' code runs as the same build user and could race the
    extraction: whatever it left is found before the builder (root) uses the tree."""
    user = ensure_build_user(Settings().build_user)
    arch = make_tar(("pkg/a.py", "file", "A"), ("notes.txt", "file", "n"))
    plan = check_upload(arch, LIMITS)
    outside = base / "outside.txt"
    outside.write_text("not the upload's\n")
    os.chmod(outside, 0o600)
    user.chown(outside)

    def extracted(name: str) -> Path:
        d = base / name
        (d / "pkg").mkdir(parents=True)
        (d / "pkg" / "a.py").write_text("A")
        (d / "notes.txt").write_text("n")
        user.chown_tree(d)
        return d

    planted = extracted("planted")
    (planted / "pkg" / "evil").symlink_to("/etc")
    with pytest.raises(BuildError, match="unexpected symlink 'pkg/evil'"):
        reclaim_tree(planted, plan, user)
    swapped = extracted("swapped")
    (swapped / "notes.txt").unlink()
    os.link(outside, swapped / "notes.txt")  # the racer's own file, linked in
    with pytest.raises(BuildError, match=r"'notes\.txt' changed while unpacking"):
        reclaim_tree(swapped, plan, user)
    st = os.stat(outside)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.uid, 0o600)  # never touched
    clean = extracted("clean")
    reclaim_tree(clean, plan, user)
    assert {os.lstat(p).st_uid for p in [clean, *clean.rglob("*")]} == {os.geteuid()}
