"""Access lines of apps with log drains: which app a line is about (never a
client's say), and reading the shared access log as it grows and rotates."""

from __future__ import annotations

import os
from pathlib import Path

from roost.router.accesstail import MAX_READ, AccessTail, app_of, pick
from roost.wire.messages import Msg


def _access(app: str = "shop", agent: str = "curl/8.0", rid: str = "abc", host: str = "") -> bytes:
    # The format accesslog.AccessLog writes.
    return (
        f'127.0.0.1 - - [06/Dec/2026:09:00:00 +0000] "GET /a?b=1 HTTP/1.1" 200 12 "-" '
        f'"{agent}" host={host or app + ".example.com"} app={app} inst={app}-web-1 '
        f"ms=3.2 rid={rid}\n"
    ).encode()


def test_the_app_is_read_from_the_routers_own_fields() -> None:
    assert app_of(_access("shop")) == "shop"
    assert app_of(_access("-")) is None  # no app: an unknown host
    # A client imitating the fields (in its agent, its request id or its
    # Host header) sends the line to no drain rather than to another app's.
    fake = " app=victim inst=victim-web-1 ms=1.0 rid="
    assert app_of(_access("shop", agent="x" + fake + "y")) is None
    assert app_of(_access("shop", rid="r" + fake + "z")) is None
    assert app_of(_access("-", host="h" + fake + "q")) is None


def test_pick_keeps_whole_lines_of_drained_apps_and_the_rest_for_later() -> None:
    data = _access("shop") + _access("blog") + _access("shop", rid="2")[:40]
    lines, rest = pick(data, ["shop"], 100.0)
    assert [(ln.app, ln.source, ln.process, ln.ts) for ln in lines] == [
        ("shop", "router", "router", 100.0)
    ]
    assert lines[0].line == _access("shop").decode().rstrip("\n")
    assert rest == _access("shop", rid="2")[:40]
    lines, rest = pick(rest + _access("shop", rid="2")[40:], ["shop"], 101.0)
    assert [ln.line.endswith("rid=2") for ln in lines] == [True] and rest == b""
    assert pick(b"partial", ["shop"], 0.0) == ([], b"partial")
    assert pick(_access("shop"), [], 0.0) == ([], b"")


class _Unused:
    async def call(self, msg: Msg, timeout: float = 5.0, tries: int | None = None) -> Msg:
        raise AssertionError("not sent in this test")


def test_reading_follows_the_file_through_rotation_and_skips_a_flood(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(_access("shop", rid="old"))
    tail = AccessTail(log, _Unused())
    assert tail._read() == b""  # starts at the end: earlier lines are not its
    with log.open("ab") as f:
        f.write(_access("shop", rid="1"))
    assert tail._read() == _access("shop", rid="1")
    # Rotated (renamed, a new file appended to): the old one is read to its end first.
    with log.open("ab") as f:
        f.write(_access("shop", rid="2"))
    os.rename(log, tmp_path / "access.log.1")
    log.write_bytes(_access("shop", rid="3"))
    assert tail._read() == _access("shop", rid="2")
    assert tail._read() == _access("shop", rid="3")
    assert tail._read() == b""
    # Far behind: only the newest MAX_READ bytes are read, the rest counted.
    with log.open("ab") as f:
        f.write(b"x" * (MAX_READ + 1000))
    assert len(tail._read()) == MAX_READ and tail.skipped_bytes == 1000
    assert tail._fd is not None
    os.close(tail._fd)


def test_while_no_app_has_a_drain_the_lines_are_passed_over_not_read(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(_access("shop", rid="old"))
    tail = AccessTail(log, _Unused())
    tail._rest = b"a partial line"
    with log.open("ab") as f:
        f.write(_access("shop", rid="1") + b"x" * (MAX_READ + 1000))
    # No drains: nothing read (a busy router's second of lines was copied on
    # the event loop only for pick() to drop it), nothing counted as lost.
    assert tail._next() == b"" and tail._rest == b"" and tail.skipped_bytes == 0
    assert tail._fd is not None and os.lseek(tail._fd, 0, os.SEEK_CUR) == log.stat().st_size
    # Rotated meanwhile: the new file, from its end.
    os.rename(log, tmp_path / "access.log.1")
    log.write_bytes(_access("shop", rid="2"))
    assert tail._next() == b""
    # A drain now: what comes after is read as before.
    tail.apps = ["shop"]
    with log.open("ab") as f:
        f.write(_access("shop", rid="3"))
    assert tail._next() == _access("shop", rid="3")
    os.close(tail._fd)
