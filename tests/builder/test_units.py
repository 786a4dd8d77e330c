"""Pure parts of the builder: upload checks, ignores, locks, disk threshold."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from roost.builder import lock as locks
from roost.builder.diskcheck import refusal
from roost.builder.errors import BuildError
from roost.builder.ignore import apply_ignores, ignored_paths
from roost.builder.upload import UploadLimits, check_upload

LIMITS = UploadLimits(max_upload_bytes=10 << 20)


def archive(*members: tarfile.TarInfo, data: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for m in members:
            payload = (data or {}).get(m.name, b"")
            if m.isfile():
                m.size = len(payload)
            tf.addfile(m, io.BytesIO(payload) if m.isfile() else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type = kind
    m.linkname = link
    m.mode = 0o644
    return m


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (member("/etc/cron.d/x"), "absolute"),
        (member("../escape.txt"), "'\\.\\.'"),
        (member("a/../../escape.txt"), "outside|'\\.\\.'"),
        (member("link", tarfile.SYMTYPE, "/etc/passwd"), "absolute path"),
        (member("sub/link", tarfile.SYMTYPE, "../../etc"), "leaves the app"),
        (member("hard", tarfile.LNKTYPE, "../outside"), "'\\.\\.'"),
        (member("dev", tarfile.CHRTYPE), "device"),
        (member("fifo", tarfile.FIFOTYPE), "fifo"),
    ],
)
def test_bad_uploads_are_refused(bad: tarfile.TarInfo, why: str) -> None:
    # Refused by the check that runs before anything is written (real
    # extractions: test_upload_safety.py).
    arch = archive(member("ok.txt"), bad, data={"ok.txt": b"fine"})
    with pytest.raises(BuildError, match=why):
        check_upload(arch, LIMITS)


def test_inside_symlinks_and_files_are_approved() -> None:
    arch = archive(
        member("pkg/a.txt"), member("pkg/link", tarfile.SYMTYPE, "a.txt"), data={"pkg/a.txt": b"A"}
    )
    assert [(e.name, e.kind) for e in check_upload(arch, LIMITS)] == [
        ("pkg/a.txt", "file"),
        ("pkg/link", "symlink"),
    ]


def test_oversized_and_exploding_uploads_are_refused() -> None:
    with pytest.raises(BuildError, match="ROOST_MAX_UPLOAD"):
        check_upload(b"x" * 2000, UploadLimits(max_upload_bytes=1000))
    bomb = archive(member("zeros"), data={"zeros": b"\0" * (64 << 20)})
    with pytest.raises(BuildError, match="expand"):
        check_upload(bomb, LIMITS)
    with pytest.raises(BuildError, match=r"damaged|not a readable"):
        check_upload(gzip.compress(b"not a tar at all" * 100)[:50], LIMITS)


def test_roostignore_and_epioignore(tmp_path: Path) -> None:
    (tmp_path / ".roostignore").write_text("*.pyc\nbuild/\n")
    (tmp_path / ".epioignore").write_text("secret.txt\n!keep.pyc\n")
    for rel in ("a.pyc", "keep.pyc", "build/x.txt", "src/b.pyc", "src/c.py", "secret.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    removed = apply_ignores(tmp_path)
    assert sorted(removed) == ["a.pyc", "build/", "secret.txt", "src/b.pyc"]
    assert (tmp_path / "keep.pyc").exists() and (tmp_path / "src" / "c.py").exists()
    assert ignored_paths(["x.log", "y.py"], ["*.log"]) == ["x.log"]


def test_lock_reuse_depends_on_requirements_and_python(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("-r base.txt\nflask\n")
    (tmp_path / "base.txt").write_text("requests\n")
    d1 = locks.requirements_digest(tmp_path, "requirements.txt")
    lock = locks.make_lock(
        "flask==3.1.0\nrequests==2.32.0\n", d1, "cpython-3.11.2 /usr/bin/python3.11"
    )
    assert locks.reusable(lock, d1, "cpython-3.11.2 /usr/bin/python3.11")
    assert not locks.reusable(lock, d1, "cpython-3.12.0 /usr/bin/python3.12")
    (tmp_path / "base.txt").write_text("requests<3\n")  # an included file changed
    d2 = locks.requirements_digest(tmp_path, "requirements.txt")
    assert d2 != d1 and not locks.reusable(lock, d2, "cpython-3.11.2 /usr/bin/python3.11")
    (tmp_path / "requirements.txt").write_text("-e ./localpkg\n")
    assert locks.requirements_digest(tmp_path, "requirements.txt") is None
    assert locks.layer_key(lock, "p") == locks.layer_key(lock.replace("# roost", "#  x"), "p")
    assert locks.layer_key(lock, "p") != locks.layer_key(lock, "q")


def test_disk_refusal_threshold() -> None:
    gib = 1 << 30
    assert refusal(free=50 * gib, total=100 * gib, needed=gib, min_free_fraction=0.15) is None
    why = refusal(free=10 * gib, total=100 * gib, needed=gib, min_free_fraction=0.15)
    assert why is not None and "10.0% free" in why and "ROOST_MIN_FREE_DISK" in why
    assert refusal(free=16 * gib, total=100 * gib, needed=2 * gib, min_free_fraction=0.15)
