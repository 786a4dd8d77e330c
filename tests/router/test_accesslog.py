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
        log.append(line)
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


async def test_lines_copied_into_the_buffer_reach_the_file_whole_and_in_order(
    tmp_path: Path,
) -> None:
    """log() copies each line's pieces into one buffer: lines across many
    flushes (the buffer filled to its end), some escaped, and one line longer
    than the whole buffer come out as each line written alone does."""
    import asyncio

    from roost.router.balance import Slot
    from roost.router.client import ClientConnection
    from roost.router.context import Context, Limits
    from roost.router.exchange import Exchange
    from roost.router.table import AppEntry
    from roost.wire.messages import AppRoute, Backend

    backend = Backend(instance_id="i1", host="127.0.0.1", port=1)
    entry = AppEntry(AppRoute(app="a", hostnames=["a.localhost"], backends=[backend]))
    ctx = Context(limits=Limits(), spawn=lambda coro: asyncio.ensure_future(coro))
    client = ClientConnection(ctx, b"http")
    client.peer = b"10.0.0.1"

    def exchange(i: int) -> Exchange:
        url = b"/" + b"x" * (i * 7 % 900) + (b'"q\\' if i % 5 == 0 else b"")
        if i == 1500:
            url = b"/" + b"y" * 100_000  # longer than the buffer
        ex = Exchange(client, 100.0, url)
        ex.method, ex.status, ex.bytes_out = b"GET", 200 + i % 400, i
        ex.host, ex.rid, ex.agent = b"a.localhost", b"r-%x" % i, b"agent %d" % i
        ex.entry, ex.slot = entry, Slot(backend)
        return ex

    many = AccessLog(tmp_path / "many.log", max_bytes=1 << 30)
    alone = AccessLog(tmp_path / "alone.log", max_bytes=1 << 30)
    alone.stamp, alone._stamped = many.stamp, many._stamped  # (one second for both)
    expected = []
    for i in range(3000):
        many.log(client, exchange(i), 100.0 + i / 1000.0)
        alone.log(client, exchange(i), 100.0 + i / 1000.0)
        alone.flush()
        alone.stamp, alone._stamped = many.stamp, many._stamped
        expected.append((tmp_path / "alone.log").read_bytes())
        (tmp_path / "alone.log").write_bytes(b"")
    many.close()
    alone.close()
    data = (tmp_path / "many.log").read_bytes()
    assert len(data) > 8 * 64 * 1024  # (many flushes of a full buffer)
    assert data == b"".join(expected)
    assert all(line.count(b"\n") == 1 and line.endswith(b"\n") for line in expected)
    assert b"\0" not in data  # (no byte reserved and left unwritten)
