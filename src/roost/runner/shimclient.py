"""The runner's side of the per-instance shims (`roost.runner.shim`).

Theory of operation. Every instance the runner starts runs under a shim of
its own, so it outlives the runner (a crash, `kill -9`, a hand-over on
SIGUSR2) and a new runner adopts it. For each instance, DATA/runner/shims/
<instance>/ (root's, 0700) holds the shim's socket and `record.json`: what a
successor needs to report and reconcile the instance without asking anyone
(its assignment, process name, port, cgroup unit, state, start time),
written atomically by the runner before the shim starts and again whenever
the instance's state or pid changes.

`Child` is one instance as the supervisor sees it: started (`Child.start`:
the shim, told what to exec and the child's set-up as data) or adopted
(`discover`: every shim directory whose shim answers; a directory whose shim
is gone is removed, a live shim without a valid record is told to kill its
instance). `Child.run` pumps the instance's output from the shim's socket
into the log until the exit frame, then reads the OOM counter and ends the
cgroup, tells the shim to go, and removes the directory. Cancelled (the
runner hands over, or crashes), it only lets go of the socket: the instance
keeps running and its shim keeps its output for the next runner.

The shim is trusted (the runner's own code, as root); what it relays from
the instance is not, and neither is anything read back from the directory:
frames are bounded and typed, the record is decoded into typed fields and
its names checked against the directory it was found in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import msgspec

from roost import aio
from roost.runner import shimproto as protocol
from roost.runner import shimstart
from roost.runner.layout import safe_name
from roost.runner.logbuffer import LineSplitter
from roost.runner.outtail import Tail
from roost.runner.shimstart import ShimProcess
from roost.tenant.launch import Prepared
from roost.wire.messages import InstanceAssignment, InstanceState

R = TypeVar("R")
log = logging.getLogger("roost.runner")

RECORD_NAME = "record.json"
TAIL_LINES = 30
# How long a shim may take to start its instance and say so.
START_TIMEOUT_S = 30.0
# How long a collected shim may take to exit, and a shim to answer a connect.
SHIM_TIMEOUT_S = 5.0

LineSink = Callable[[str, str], None]  # (stream, line)


class ShimError(RuntimeError):
    """A shim could not be started or spoke out of turn (the message says how)."""


class ShimRecord(msgspec.Struct, kw_only=True):
    """What a successor needs of one instance (DATA/runner/shims/<id>/record.json)."""

    assignment: InstanceAssignment
    process_name: str
    port: int = 0
    command: str = ""
    unit: str = ""  # the cgroup's name ("" unconfined)
    memory_mb: int = 0
    state: InstanceState = "starting"
    pid: int = 0
    started_wall: float = 0.0
    runs: int = 1
    restarts: int = 0

    @property
    def instance_id(self) -> str:
        return self.assignment.instance_id


class Status(msgspec.Struct):
    """The shim's first frame."""

    pid: int
    started: float
    exited: bool
    returncode: int | None
    dropped: int = 0
    shim: int = 0
    first_seq: int = 1  # a session's: the number of the first output frame to come
    input_offset: int = 0  # a session's: input bytes taken


class Exit(msgspec.Struct):
    returncode: int | None


def write_record(directory: Path, record: ShimRecord) -> None:
    """Atomically (a reader sees the old record or the new, never half)."""
    tmp = directory / (RECORD_NAME + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(msgspec.json.encode(record))
    os.replace(tmp, directory / RECORD_NAME)


def read_record(directory: Path) -> ShimRecord | None:
    """The record, if it is there, well-formed and names this directory's instance."""
    try:
        data = (directory / RECORD_NAME).read_bytes()
        rec = msgspec.json.decode(data, type=ShimRecord)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    if safe_name(rec.instance_id) != directory.name or not 0 <= rec.port <= 65535:
        return None
    if rec.unit not in ("", rec.instance_id):  # the runner names each cgroup so
        return None
    if rec.pid < 0 or rec.runs < 0 or rec.restarts < 0:
        return None
    return rec


def sandbox_returncode(rc: int) -> int:
    """bwrap exits 128+N when its command died of signal N: say it as Popen would."""
    if 128 < rc < 128 + signal.NSIG:
        return -(rc - 128)
    return rc


def decode_frame(kind: bytes, payload: bytes) -> Status | Exit | tuple[str, bytes]:
    """One frame from a shim, typed: a status, an exit, or (stream, output)."""
    if kind == protocol.STATUS:
        return msgspec.json.decode(payload, type=Status)
    if kind == protocol.EXIT:
        return msgspec.json.decode(payload, type=Exit)
    return ("stdout" if kind == protocol.STDOUT else "stderr", payload)


async def connect(directory: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open the shim's socket in `directory` (any depth: see shim.bind_path)."""
    dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(protocol.bind_path(dir_fd, protocol.SOCKET_NAME))
    except OSError:
        sock.close()
        raise
    finally:
        os.close(dir_fd)
    sock.setblocking(False)
    return await asyncio.open_unix_connection(sock=sock, limit=2 * protocol.MAX_FRAME)


async def read_frame(reader: asyncio.StreamReader) -> Status | Exit | tuple[str, bytes]:
    """The next frame; IncompleteReadError at EOF, ShimError when malformed."""
    header = await reader.readexactly(protocol.HEADER.size)
    buf = bytearray(header)
    _, length = protocol.HEADER.unpack(header)
    if length <= protocol.MAX_FRAME:
        buf += await reader.readexactly(length)
    try:
        frames = protocol.parse_frames(
            buf, protocol.STATUS + protocol.STDOUT + protocol.STDERR + protocol.EXIT
        )
        return decode_frame(*frames[0])
    except (protocol.ProtocolError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ShimError(f"bad frame from a shim: {exc}") from None


class Child:
    """One instance, held by its shim (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        record: ShimRecord,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: Status,
        prepared: Prepared | None = None,
        popen: ShimProcess | None = None,
    ) -> None:
        self.directory = directory
        self.record = record
        self.pid = status.pid
        self.status = status
        self.prepared = prepared
        self._reader = reader
        self._writer = writer
        # Our own child (we reap it), or an adopted shim (`roost up` reaps it).
        self._popen = popen
        self.returncode: int | None = None
        # Set once it exited: the kernel OOM-killed something in its cgroup.
        self.oom_killed = False
        # Set when the shim vanished without saying how the instance ended.
        self.error = ""

    @classmethod
    async def start(
        cls,
        directory: Path,
        record: ShimRecord,
        env: Mapping[str, str],
        cwd: Path,
        prepared: Prepared,
    ) -> Child:
        """Start the instance under a new shim; raises ShimError or OSError."""
        spec = {"argv": list(prepared.argv), **spec_of(env, cwd, prepared)}
        popen, reader, writer, status = await launch(
            directory, spec, lambda: write_record(directory, record)
        )
        record.pid = status.pid
        record.started_wall = status.started
        write_record(directory, record)
        return cls(directory, record, reader, writer, status, prepared, popen)

    def save(self, state: InstanceState) -> None:
        """Record the instance's state for a successor (on every change)."""
        if self.record.state == state:
            return
        self.record.state = state
        with contextlib.suppress(OSError):
            write_record(self.directory, self.record)

    def signal_group(self, sig: int) -> bool:
        """Send `sig` to the instance's process group (through its shim)."""
        if self.returncode is not None or self._writer.is_closing():
            return False
        self._writer.write(protocol.frame(protocol.SIGNAL, str(int(sig)).encode()))
        return True

    async def run(self, sink: LineSink) -> tuple[int | None, list[str]]:
        """Pump output into `sink` until the instance exits; (returncode, output tail).

        The tail is the last lines of stderr, or of stdout when stderr was empty.
        Cancelled, it lets go of the shim and the instance runs on.
        """
        tails = {"stdout": Tail(TAIL_LINES), "stderr": Tail(TAIL_LINES)}
        splitters = {"stdout": LineSplitter(), "stderr": LineSplitter()}
        if self.status.dropped:
            sink("stderr", f"[{self.status.dropped} bytes of output lost while no runner read it]")
        rc: int | None = None
        try:
            while True:
                try:
                    msg = await read_frame(self._reader)
                except (asyncio.IncompleteReadError, ConnectionError, ShimError) as exc:
                    self.error = f"its shim went away ({exc or 'closed'}); the instance with it"
                    break
                if isinstance(msg, Exit):
                    rc = msg.returncode
                    break
                if isinstance(msg, tuple):
                    stream, data = msg
                    for line in splitters[stream].feed(data):
                        tails[stream].add(line)
                        sink(stream, line)
        except asyncio.CancelledError:
            self._writer.close()
            raise
        for stream, splitter in splitters.items():
            for line in splitter.flush():
                tails[stream].add(line)
                sink(stream, line)
        self._finish(rc)
        await self._collect()
        return self.returncode, (tails["stderr"] or tails["stdout"]).lines()

    def _finish(self, rc: int | None) -> None:
        """It exited: read the OOM counter, then end the cgroup."""
        self.returncode = rc
        if self.prepared is None:
            return
        self.oom_killed = self.prepared.oom_killed()
        self.prepared.finish()
        if self.prepared.sandboxed and rc is not None:
            self.returncode = sandbox_returncode(rc)

    async def _collect(self) -> None:
        await collect(self.directory, self._reader, self._writer, self._popen)


def spec_of(env: Mapping[str, str], cwd: Path, prepared: Prepared) -> dict[str, object]:
    """The spec's environment, working directory and the child's set-up (no argv)."""
    return {
        "env": dict(env),
        # A sandbox sets its own working directory (bwrap --chdir).
        "cwd": "/" if prepared.sandboxed else str(cwd),
        **prepared.setup_data(),
    }


async def launch(
    directory: Path, spec: Mapping[str, object], write_record: Callable[[], None]
) -> tuple[ShimProcess, asyncio.StreamReader, asyncio.StreamWriter, Status]:
    """Start a shim in a fresh `directory` (spec and record written first) and
    connect to it; raises ShimError or OSError (then nothing is left)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700, parents=True)
    fd = os.open(directory / protocol.SPEC_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(spec, f)
    write_record()
    # Its own session, no death signal: it outlives us (roost up, a
    # subreaper, adopts it when we die). Forked by our fork server (shimstart).
    popen, answer = shimstart.start(directory)
    try:
        line = await aio.wait_for(asyncio.to_thread(answer.readline), START_TIMEOUT_S)
        answer.close()
        answer = json.loads(line or b"{}")
        if "error" in answer or "pid" not in answer:
            raise ShimError(str(answer.get("error") or "the shim exited before it started"))
        reader, writer = await connect(directory)
        status = await aio.wait_for(read_frame(reader), SHIM_TIMEOUT_S)
        if not isinstance(status, Status):
            raise ShimError("the shim did not say its status first")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            popen.kill()
        await asyncio.to_thread(popen.wait)
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return popen, reader, writer, status


async def hello(directory: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Status]:
    """Connect to a running shim and read its status; OSError when it is gone,
    ShimError (connection closed) when it does not answer."""
    reader, writer = await connect(directory)
    try:
        status = await aio.wait_for(read_frame(reader), SHIM_TIMEOUT_S)
        if not isinstance(status, Status) or status.pid <= 0:
            raise ShimError("no status")
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ShimError) as exc:
        writer.close()
        raise ShimError(str(exc) or type(exc).__name__) from None
    return reader, writer, status


async def collect(
    directory: Path,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    popen: ShimProcess | None,
    *frames: bytes,
) -> None:
    """Tell the shim it may go (after `frames`), wait for it, remove its directory."""
    with contextlib.suppress(ConnectionError, OSError):
        for data in frames:
            writer.write(data)
        writer.write(protocol.frame(protocol.COLLECT))
        with contextlib.suppress(TimeoutError, ConnectionError):
            await aio.wait_for(reader.read(), SHIM_TIMEOUT_S)  # EOF: it is exiting
    writer.close()
    if popen is not None:
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(shimstart.gone(popen), SHIM_TIMEOUT_S)
        if popen.poll() is None:
            popen.kill()  # a shim that does not go: the instance is over anyway
        popen.wait()
    shutil.rmtree(directory, ignore_errors=True)


async def discover(root: Path) -> list[tuple[ShimRecord, Child]]:
    """The instances a previous runner left running, each with its record."""
    found: list[tuple[ShimRecord, Child]] = []
    for record, directory, reader, writer, status in await live(root, read_record, "instance"):
        record.pid = status.pid
        found.append((record, Child(directory, record, reader, writer, status)))
    return found


Live = tuple[R, Path, asyncio.StreamReader, asyncio.StreamWriter, "Status"]


async def live(root: Path, read: Callable[[Path], R | None], what: str) -> list[Live[R]]:
    """The live shims under `root` (instances' or sessions'), each with its
    record as `read` finds it. Stale directories (the shim is gone) are
    removed; a live shim without a usable record is told to end its `what`."""
    found: list[Live[R]] = []
    try:
        entries = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    except FileNotFoundError:
        return found
    for directory in entries:
        record = read(directory)
        reached = await reach(directory)
        if reached is None:
            continue
        reader, writer, status = reached
        if record is None:
            log.warning("shim in %s has no usable record: ending its %s", directory.name, what)
            await end(directory, reader, writer)
            continue
        found.append((record, directory, reader, writer, status))
    return found


async def reach(
    directory: Path,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Status] | None:
    """A live shim's connection and status; None when it is gone (its
    directory removed) or does not answer (left alone)."""
    try:
        return await hello(directory)
    except OSError:
        log.info("removing the record of a shim that is gone: %s", directory.name)
        shutil.rmtree(directory, ignore_errors=True)
    except ShimError as exc:
        log.warning("shim in %s does not answer (%s): left alone", directory.name, exc)
    return None


async def end(directory: Path, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Kill everything a shim holds and let it go (a shim nobody can account for)."""
    await collect(
        directory,
        reader,
        writer,
        None,
        protocol.frame(protocol.KILL_CGROUP),
        protocol.frame(protocol.SIGNAL, str(int(signal.SIGKILL)).encode()),
    )
