"""Exec sessions (roost.sessions.server) with real processes, without sockets:
the protocol's idempotence, back-pressure, ptys, and that nothing is left
running when a session is closed or abandoned."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import psutil
import pytest

from roost.sessions.server import OUTPUT_LIMIT, ExecSessions, Spawn
from roost.wire.messages import (
    Error,
    ExecClose,
    ExecInput,
    ExecOutput,
    ExecPoll,
    ExecResize,
    ExecSignal,
    Ok,
)
from tests.sessions import kit

# kit's fixture, found by pytest among this module's names.
sessions = kit.sessions

PY = sys.executable


async def _drain(es: ExecSessions, sid: str, after: int = 0) -> tuple[bytes, bytes, ExecOutput]:
    out, err = b"", b""
    while True:
        r = await es.handle(ExecPoll(session=sid, after=after, wait_s=0.5))
        assert isinstance(r, ExecOutput)
        for c in r.chunks:
            if c.stream == "stderr":
                err += c.data
            else:
                out += c.data
            after = c.seq
        if r.exit_status is not None:
            return out, err, r


async def test_pipes_are_byte_exact_and_input_is_applied_once(sessions: ExecSessions) -> None:
    code = "import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d[::-1]); sys.exit(4)"
    assert isinstance(await sessions.start("s", Spawn([PY, "-c", code], {}, Path("/"))), Ok)
    assert isinstance(await sessions.start("s", Spawn([PY, "-c", code], {}, Path("/"))), Ok)
    data = bytes(range(256)) * 100
    await sessions.handle(ExecInput(session="s", offset=0, data=data[:1000]))
    await sessions.handle(ExecInput(session="s", offset=0, data=data[:1000]))  # a retry
    await sessions.handle(ExecInput(session="s", offset=500, data=data[500:2000]))  # overlap
    await sessions.handle(ExecInput(session="s", offset=2000, data=data[2000:], eof=True))
    out, err, last = await _drain(sessions, "s")
    assert out == data[::-1] and err == b""
    assert last.exit_status == 4 and last.exit_signal == ""


async def test_unacknowledged_output_is_resent_and_bounded(sessions: ExecSessions) -> None:
    total = 4 * OUTPUT_LIMIT
    code = f"import sys; sys.stdout.buffer.write(b'x' * {total})"
    await sessions.start("big", Spawn([PY, "-c", code], {}, Path("/")))
    await asyncio.sleep(1.0)  # nobody polls: the process must be held back
    s = sessions.sessions["big"]
    assert s.unacked <= OUTPUT_LIMIT + 64 * 1024 and s.returncode is None
    first = await sessions.handle(ExecPoll(session="big", after=0))
    again = await sessions.handle(ExecPoll(session="big", after=0))  # the reply was lost
    assert isinstance(first, ExecOutput) and isinstance(again, ExecOutput)
    assert [c.seq for c in first.chunks] == [c.seq for c in again.chunks]
    out, _, last = await _drain(sessions, "big")
    assert len(out) == total and last.exit_status == 0


async def test_pty_resize_and_interrupt(sessions: ExecSessions) -> None:
    # The handler only notes the signal: printing from it could re-enter a write.
    code = """
import signal, shutil, sys, time
changed = []
signal.signal(signal.SIGWINCH, lambda *a: changed.append(1))
print("ready", flush=True)
try:
    for _ in range(300):
        time.sleep(0.1)
        if changed:
            changed.clear()
            print("size", *shutil.get_terminal_size(), flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
sys.exit(0 if sys.stdin.isatty() else 9)
"""
    await sessions.start("t", Spawn([PY, "-c", code], {}, Path("/"), pty=True, rows=10, cols=20))
    seen = b""
    after = 0

    async def until(text: bytes) -> None:
        nonlocal seen, after
        for _ in range(40):
            r = await sessions.handle(ExecPoll(session="t", after=after, wait_s=0.5))
            assert isinstance(r, ExecOutput)
            for c in r.chunks:
                seen += c.data
                after = c.seq
            if text in seen:
                return
        raise AssertionError(f"{text!r} not in {seen!r}")

    await until(b"ready")
    await sessions.handle(ExecResize(session="t", rows=33, cols=101))
    await until(b"size 101 33")
    await sessions.handle(ExecInput(session="t", offset=0, data=b"\x03"))  # ^C via the tty
    await until(b"interrupted")
    _, _, last = await _drain(sessions, "t", after)
    assert last.exit_status == 0


async def test_signals_and_exit_by_signal(sessions: ExecSessions) -> None:
    await sessions.start("k", Spawn(["sleep", "30"], {}, Path("/")))
    assert isinstance(await sessions.handle(ExecSignal(session="k", signal="TERM")), Ok)
    _, _, last = await _drain(sessions, "k")
    assert last.exit_signal == "TERM" and last.exit_status == 128 + 15
    assert isinstance(await sessions.handle(ExecSignal(session="k", signal="BOGUS")), Error)


async def test_close_stops_the_whole_group(sessions: ExecSessions) -> None:
    code = "sleep 60 & echo $!; wait"
    await sessions.start("c", Spawn(["/bin/sh", "-c", code], {}, Path("/")))
    r = await sessions.handle(ExecPoll(session="c", wait_s=2))
    assert isinstance(r, ExecOutput)
    child = int(b"".join(c.data for c in r.chunks).split()[0])
    leader = sessions.sessions["c"].pid
    assert isinstance(await sessions.handle(ExecClose(session="c")), Ok)
    for _ in range(100):
        if "c" not in sessions.sessions:
            break
        await asyncio.sleep(0.05)
    assert "c" not in sessions.sessions
    for pid in (leader, child):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert isinstance(await sessions.handle(ExecPoll(session="c")), Error)


async def test_an_abandoned_session_is_stopped() -> None:
    now = [0.0]
    es = ExecSessions(idle_s=5, grace_s=1, clock=lambda: now[0])
    task = asyncio.create_task(es.run())
    try:
        await es.start("gone", Spawn(["sleep", "60"], {}, Path("/")))
        pid = es.sessions["gone"].pid
        now[0] = 10.0  # nobody asked for 10 s
        for _ in range(60):
            if "gone" not in es.sessions:
                break
            await asyncio.sleep(0.1)
        assert "gone" not in es.sessions
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        es.shutdown()
        await asyncio.wait_for(task, 10)


async def test_a_command_that_cannot_start_is_an_error(sessions: ExecSessions) -> None:
    r = await sessions.start("x", Spawn(["/no/such/program"], {}, Path("/")))
    assert isinstance(r, Error) and "could not start" in r.message
    assert not sessions.has("x")


async def test_a_kept_session_outlives_the_idle_timeout_with_its_exit_status() -> None:
    # A cron run whose controller died: nobody polls it for longer than
    # idle_s; it runs on, and its output and exit wait for the next poller.
    now = [0.0]
    es = ExecSessions(idle_s=5, grace_s=1, clock=lambda: now[0])
    task = asyncio.create_task(es.run())
    try:
        spawn = Spawn([PY, "-c", "print('done'); raise SystemExit(3)"], {}, Path("/"), keep_s=60)
        await es.start("kept", spawn)
        await es.start("idle", Spawn(["sleep", "60"], {}, Path("/")))
        now[0] = 30.0
        for _ in range(60):
            if "idle" not in es.sessions:
                break
            await asyncio.sleep(0.1)
        assert "idle" not in es.sessions and "kept" in es.sessions
        out, _, last = await _drain(es, "kept")
        assert out == b"done\n" and last.exit_status == 3
        now[0] = 100.0  # 70 s since that poll: now it goes too
        for _ in range(60):
            if "kept" not in es.sessions:
                break
            await asyncio.sleep(0.1)
        assert "kept" not in es.sessions
    finally:
        es.shutdown()
        await asyncio.wait_for(task, 10)
