"""The shims' fork server (runner/shimfork.py, runner/shimstart.py): shims
forked from one interpreter, outliving it, and a start that never depends on it."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import psutil
import pytest

from roost.runner import shimstart
from roost.runner.shimclient import Child, ShimRecord, discover
from tests.runner.helpers import alive, assignment, eventually, unconfined

SERVER = shimstart.SERVER


async def _start(root: Path, name: str, argv: list[str]) -> Child:
    record = ShimRecord(assignment=assignment(name), process_name="worker.1")
    return await Child.start(root / name, record, {"PATH": os.defpath}, root, unconfined(argv))


async def test_shims_are_forked_by_the_server_and_outlive_it(tmp_path: Path) -> None:
    first = await _start(tmp_path, "f1", ["sleep", "300"])
    second = await _start(tmp_path, "f2", ["sh", "-c", "echo hello; exit 3"])
    server = SERVER.pid
    assert server and all(psutil.Process(c.status.shim).ppid() == server for c in (first, second))
    # The second's exit reaches us as before; its shim ends once collected.
    lines: list[str] = []
    assert (await second.run(lambda _s, line: lines.append(line)))[0] == 3
    assert lines == ["hello"]
    await eventually(lambda: not alive(second.status.shim), what="the collected shim ends")

    # The server ends (as with its runner): the first shim and its instance go on,
    # and are found as a successor finds them.
    reading = asyncio.create_task(first.run(lambda _s, _l: None))
    await asyncio.sleep(0)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    SERVER.reset()
    assert not alive(server) and alive(first.status.shim) and alive(first.pid)
    [(_rec, adopted)] = await discover(tmp_path)
    assert adopted.pid == first.pid
    assert adopted.signal_group(signal.SIGTERM)
    rc, _tail = await adopted.run(lambda _s, _l: None)
    assert rc == -signal.SIGTERM
    # The orphaned shim is no child of ours any more: nothing to reap.
    await eventually(lambda: not alive(first.status.shim), what="the orphaned shim ends")

    # The next start brings a new server.
    third = await _start(tmp_path, "f3", ["true"])
    assert SERVER.pid not in (0, server)
    assert (await third.run(lambda _s, _l: None))[0] == 0


async def test_a_shim_starts_on_its_own_when_the_server_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SERVER.reset()
    monkeypatch.setattr(shimstart.shimfork, "__file__", str(tmp_path / "missing.py"))
    child = await _start(tmp_path, "o1", ["sh", "-c", "echo alone"])
    assert psutil.Process(child.status.shim).ppid() == os.getpid()
    lines: list[str] = []
    assert (await child.run(lambda _s, line: lines.append(line)))[0] == 0
    assert lines == ["alone"]
    SERVER.reset()


def test_the_server_refuses_a_bad_request_and_serves_the_next(tmp_path: Path) -> None:
    SERVER.reset()
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(OSError, match="absolute path"):
            SERVER.fork(Path("relative/dir"), write_end)
        sock = SERVER._ensure()
        sock.send(b"/no/descriptor")
        assert sock.recv(256).startswith(b"error: a request takes one descriptor")
        # A directory with no spec: the shim says so on its answer pipe and exits.
        (tmp_path / "empty").mkdir()
        pid = SERVER.fork(tmp_path / "empty", write_end)
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end, "rb") as answer:
            read_end = -1
            assert answer.read() == b""  # no answer line: it exited before it started
        assert pid > 0
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
        SERVER.reset()
