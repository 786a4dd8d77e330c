"""The per-instance shim: its protocol and decisions (pure), and a real shim
that keeps output while no runner reads it and ends what nobody can adopt."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import msgspec
import pytest

from roost.runner import plan as P
from roost.runner import shim, shimproto
from roost.runner.model import Policy
from roost.runner.shimclient import (
    Child,
    ShimRecord,
    Status,
    decode_frame,
    discover,
    read_record,
    sandbox_returncode,
    write_record,
)
from tests.runner.helpers import alive, assignment, eventually, unconfined

# ------------------------------------------------------------ protocol (pure)


def test_frames_are_taken_whole_and_partial_ones_wait() -> None:
    buf = bytearray(shim.frame(b"s", b"15") + shim.frame(b"c") + shim.frame(b"s", b"9")[:5])
    assert shim.parse_frames(buf, b"skc") == [(b"s", b"15"), (b"c", b"")]
    buf += shim.frame(b"s", b"9")[5:]
    assert shim.parse_frames(buf, b"skc") == [(b"s", b"9")]
    assert buf == bytearray()


def test_bad_frames_are_refused() -> None:
    with pytest.raises(shim.ProtocolError, match="unknown frame kind"):
        shim.parse_frames(bytearray(shim.frame(b"z", b"")), b"skc")
    oversized = bytearray(shimproto.HEADER.pack(b"o", shim.MAX_FRAME + 1))
    with pytest.raises(shim.ProtocolError, match="at most"):
        shim.parse_frames(oversized, b"oe")
    for bad in (b"", b"0", b"65", b"-9", b"9; rm -rf /", b"\xff"):
        with pytest.raises(shim.ProtocolError):
            shim.parse_signal(bad)
    assert shim.parse_signal(b"15") == 15


def test_the_ring_drops_the_oldest_output_and_counts_it() -> None:
    ring = shim.Ring(limit=100)
    for i in range(10):
        ring.push(shim.frame(b"o", b"%02d" % i + b"x" * 18))  # 25 bytes a frame
    assert ring.size <= 100
    assert ring.dropped == 6 * 20
    ring.push(shim.frame(b"x", b"{}"), keep=True)  # the exit: never dropped
    kept = []
    while (data := ring.pop()) is not None:
        kept.append(data)
    assert [k[5:7] for k in kept] == [b"06", b"07", b"08", b"09", b"{}"]
    assert ring.size == 0


def test_frames_from_a_shim_are_typed() -> None:
    status = decode_frame(
        shim.STATUS, b'{"pid": 7, "started": 1.5, "exited": false, "returncode": null}'
    )
    assert status == Status(pid=7, started=1.5, exited=False, returncode=None)
    assert decode_frame(shim.STDERR, b"oops") == ("stderr", b"oops")
    with pytest.raises(msgspec.ValidationError):
        decode_frame(shim.STATUS, b'{"pid": "7", "started": 1.5, "exited": false, "returncode": 0}')
    assert sandbox_returncode(128 + 15) == -15
    assert sandbox_returncode(3) == 3


def test_a_record_is_believed_only_for_its_own_directory(tmp_path: Path) -> None:
    good = tmp_path / "w1"
    good.mkdir()
    record = ShimRecord(assignment=assignment("w1"), process_name="web.1", port=20001, unit="w1")
    write_record(good, record)
    assert read_record(good) == record
    other = tmp_path / "w2"  # a record copied to another instance's directory
    other.mkdir()
    write_record(other, record)
    assert read_record(other) is None
    (good / "record.json").write_text('{"assignment": 1}')
    assert read_record(good) is None
    write_record(good, ShimRecord(assignment=assignment("w1"), process_name="web.1", port=70000))
    assert read_record(good) is None
    assert read_record(tmp_path / "missing") is None


def test_an_adopted_instance_keeps_its_state_and_restarts_its_clocks() -> None:
    policy = Policy(stop_grace_s=4.0)
    common = dict(
        process_name="web.2", pid=42, port=20002, unix_socket="/s", command="gunicorn",
        started_wall=1000.0, runs=3, restarts=2, now=50.0, policy=policy,
    )  # fmt: skip
    a = assignment("w2", spec=None)
    up = P.adopted(a, state="up", **common)  # type: ignore[arg-type]
    assert (up.state, up.pid, up.port, up.up_at, up.restarts, up.runs) == (
        "up",
        42,
        20002,
        50.0,
        2,
        3,
    )
    starting = P.adopted(a, state="starting", **common)  # type: ignore[arg-type]
    assert (starting.state, starting.started_at, starting.up_at) == ("starting", 50.0, 0.0)
    stopping = P.adopted(a, state="stopping", **common)  # type: ignore[arg-type]
    assert (stopping.state, stopping.kill_at) == ("stopping", 54.0)
    # Reconciled like any running instance: kept when assigned as it is,
    # stopped when not (or when its assignment changed).
    assert P.plan({"w2": a}, {"w2": up}, {}, 51.0, policy) == []
    assert P.plan({}, {"w2": up}, {}, 51.0, policy)[0].reason == "no longer assigned"  # type: ignore[union-attr]


# ------------------------------------------------------------ a real shim

# More output than the shim's ring holds, written while nobody reads it.
PRINTER = """
import sys, time
for i in range(5000):
    print("%06d" % i + "." * 500)
print("done", flush=True)
sys.exit(4)
"""


async def test_output_waits_in_the_shim_while_no_runner_reads_it(tmp_path: Path) -> None:
    directory = tmp_path / "shims" / "p1"
    record = ShimRecord(assignment=assignment("p1"), process_name="worker.1")
    env = {"PATH": os.defpath}
    first = await Child.start(
        directory, record, env, tmp_path, unconfined([sys.executable, "-c", PRINTER])
    )
    pid = first.pid
    # The runner goes away before reading anything (as on a crash).
    reading = asyncio.create_task(first.run(lambda _s, _l: None))
    await asyncio.sleep(0)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    await eventually(lambda: not alive(pid), what="the instance to finish")

    [(rec, adopted)] = await discover(tmp_path / "shims")
    assert rec == record and adopted.pid == pid
    assert adopted.status.exited and adopted.status.returncode == 4
    lines: list[tuple[str, str]] = []
    rc, tail = await adopted.run(lambda stream, line: lines.append((stream, line)))
    assert rc == 4 and tail[-1] == "done"
    assert lines[0][0] == "stderr" and "bytes of output lost" in lines[0][1]
    numbers = [int(line[:6]) for _s, line in lines[2:-1]]  # the first may be cut
    assert numbers == list(range(numbers[0], 5000)) and numbers[0] > 0
    assert not directory.exists()
    assert first._popen is not None
    first._popen.wait()  # the shim was our child: reap it


async def test_a_live_shim_without_a_usable_record_ends_its_instance(tmp_path: Path) -> None:
    root = tmp_path / "shims"
    record = ShimRecord(assignment=assignment("x1"), process_name="worker.1")
    child = await Child.start(
        root / "x1", record, {"PATH": os.defpath}, tmp_path, unconfined(["sleep", "300"])
    )
    reading = asyncio.create_task(child.run(lambda _s, _l: None))
    await asyncio.sleep(0)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    (root / "x1" / "record.json").write_text('{"assignment": {"instance_id": "../../etc"}}')
    (root / "stale").mkdir()  # a shim long gone: no socket
    assert await discover(root) == []
    assert not alive(child.pid)
    assert sorted(root.iterdir()) == []
    assert child._popen is not None
    child._popen.wait()


async def test_the_instance_dies_with_its_shim(tmp_path: Path) -> None:
    record = ShimRecord(assignment=assignment("d1"), process_name="worker.1")
    child = await Child.start(
        tmp_path / "d1", record, {"PATH": os.defpath}, tmp_path, unconfined(["sleep", "300"])
    )
    assert alive(child.pid)
    os.kill(child.status.shim, signal.SIGKILL)
    lines: list[str] = []
    rc, _tail = await child.run(lambda _s, line: lines.append(line))
    assert rc is None and child.error.startswith("its shim went away")
    await eventually(lambda: not alive(child.pid), what="the instance to die with its shim")
