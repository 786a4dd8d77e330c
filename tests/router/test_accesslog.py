"""The access log's rotation: bounded files, no lost lines, several writers."""

from __future__ import annotations

from pathlib import Path

from roost.router.accesslog import AccessLog
from roost.router.logrotate import shifts


def write(log: AccessLog, tag: str, n: int, size: int = 100) -> list[bytes]:
    """`n` lines of `size` bytes through the log's buffer, one flush each."""
    lines = []
    for i in range(n):
        line = f"{tag}-{i:04d} ".encode().ljust(size - 1, b"x") + b"\n"
        log._buf.append(line)
        log.flush()
        lines.append(line)
    return lines


def read_all(path: Path, keep: int) -> list[bytes]:
    names = [path.with_name(f"{path.name}.{i}") for i in range(keep, 0, -1)] + [path]
    return [ln for p in names if p.exists() for ln in p.read_bytes().splitlines(keepends=True)]


def test_rotation_plan_shifts_oldest_first() -> None:
    p = Path("/x/access.log")
    assert shifts(p, 3) == [
        (Path("/x/access.log.2"), Path("/x/access.log.3")),
        (Path("/x/access.log.1"), Path("/x/access.log.2")),
        (p, Path("/x/access.log.1")),
    ]
    assert shifts(p, 1) == [(p, Path("/x/access.log.1"))]


def test_rotates_past_the_limit_and_keeps_only_the_newest_files(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(path, max_bytes=1000, keep=2)
    lines = write(log, "a", 50)  # 5,000 bytes: rotations every 1,000
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "access.log",
        "access.log.1",
        "access.log.2",
    ]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.glob("access.log*"))
    kept = read_all(path, 2)
    assert kept == lines[-len(kept) :] and len(kept) >= 20  # the newest, in order, none torn


def test_two_workers_share_the_file_and_follow_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    one = AccessLog(path, max_bytes=1000, keep=5)
    two = AccessLog(path, max_bytes=1000, keep=5)
    a = write(one, "one", 12)  # one rotates the file its sibling also holds open
    b = write(two, "two", 3)  # two notices, reopens, and writes to the new file
    one.close()
    two.close()
    assert sorted(read_all(path, 5)) == sorted(a + b)  # nothing lost, nothing doubled
    assert path.read_bytes().endswith(b[-1])
