"""A role whose port another process took between `roost up`'s choice and
the role's bind gets another port (roost.cli.readdress), rather than
restarting on the same one forever; the daemons that connect to it learn
the new address.

The decisions are pure (tested first, over data); `Readdress` is tested with
real files and a real socket holding a port; the last tests take a port of a
real `roost up` as it starts, as another process may."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from roost.cli import readdress
from roost.cli.local import SERVED_BY, free_port, port_free, release
from roost.cli.readdress import InUse, Readdress, in_use, owned, readdressed, to_move, to_replace
from roost.cli.reload import Step
from roost.proc.children import Child
from roost.wire.cluster import ClusterConfig, Endpoint
from tests.conftest import REPO, processes_under

ZMQ_LAST_WORDS = """\
roles exited with status 70 (SOFTWARE)
  File "zmq/backend/cython/_zmq.py", line 190, in zmq.backend.cython._zmq._check_rc
zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:18300')
builder: ZMQError: Address already in use (addr='tcp://127.0.0.1:18300')"""


def book(**ports: int) -> ClusterConfig:
    return ClusterConfig(
        name="local",
        endpoints={
            role: [Endpoint(f"tcp://127.0.0.1:{port}", f"key-of-{SERVED_BY[role]}")]
            for role, port in ports.items()
        },
    )


# ------------------------------------------------------------------ decisions


def test_an_exit_says_which_ports_were_in_use() -> None:
    assert in_use(ZMQ_LAST_WORDS) == InUse(frozenset({18300}), unnamed=False)
    # As the issue reported it, and as asyncio's create_server says it.
    assert in_use("Address already in use (tcp://127.0.0.1:18300)") == InUse(
        frozenset({18300}), False
    )
    asyncio_words = (
        "OSError: [Errno 98] error while attempting to bind on address "
        "('127.0.0.1', 8125): address already in use"
    )
    assert in_use(asyncio_words) == InUse(frozenset({8125}), False)
    # A bind's plain EADDRINUSE (prometheus_client's metrics server) names none.
    assert in_use("gateway: OSError: [Errno 98] Address already in use") == InUse(frozenset(), True)
    assert in_use("exited with status 70 (SOFTWARE)\nbuilder: ValueError: no") is None
    assert in_use("") is None


def test_a_programs_ports_are_its_members_addresses_and_metrics() -> None:
    cluster = book(controller=1, **{"controller-pub": 2}, builder=3, images=4, gateway=5)
    metrics = {
        "controller": "http://127.0.0.1:8000/metrics",  # the API's: not ours to move
        "builder": "http://127.0.0.1:13",
        "runner": "http://127.0.0.1:14/metrics",
        "gateway": "http://127.0.0.1:15/metrics",
    }
    assert owned(cluster, ["controller", "builder", "runner"], metrics) == {
        ("address", "controller"): 1,
        ("address", "controller-pub"): 2,
        ("address", "builder"): 3,
        ("address", "images"): 4,
        ("metrics", "builder"): 13,
        ("metrics", "runner"): 14,
    }
    assert owned(cluster, ["gateway"], metrics) == {
        ("address", "gateway"): 5,
        ("metrics", "gateway"): 15,
    }


def test_the_ports_named_and_those_taken_now_move() -> None:
    own = {("address", "builder"): 3, ("address", "images"): 4, ("metrics", "builder"): 13}
    assert to_move(own, InUse(frozenset({3}), False), busy=[]) == [("address", "builder")]
    # Named by none: whichever is taken now.
    assert to_move(own, InUse(frozenset(), True), busy=[13]) == [("metrics", "builder")]
    assert to_move(own, InUse(frozenset({3}), False), busy=[4]) == [
        ("address", "builder"),
        ("address", "images"),
    ]
    # A port not the program's (the operator's SSH port): nothing of ours moves.
    assert to_move(own, InUse(frozenset({2222}), False), busy=[]) == []


def test_the_address_book_is_rewritten_for_the_moved_roles_only() -> None:
    cluster = book(controller=1, builder=3, images=4)
    cluster.state_url = "postgresql://x"
    new = readdressed(cluster, {"builder": 9})
    assert new.of("builder") == [Endpoint("tcp://127.0.0.1:9", "key-of-builder")]
    assert new.of("images") == cluster.of("images")
    assert new.of("controller") == cluster.of("controller")
    assert (new.name, new.state_url) == ("local", "postgresql://x")
    assert cluster.of("builder")[0].address == "tcp://127.0.0.1:3"  # not changed in place


def test_the_daemons_reading_a_moved_address_are_replaced_by_their_program() -> None:
    assert readdress.readers(["builder"]) == {"controller"}
    assert readdress.readers(["images"]) == {"runner", "router", "backupd"}
    assert readdress.readers(["controller"]) == set(readdress.READS) - {"controller"}
    assert readdress.readers([]) == set()
    groups = {"roles": ["controller", "builder", "runner", "servicehost"]}
    # A member is replaced with its host; the program starting again is not.
    assert to_replace({"runner", "router", "backupd"}, groups, "roles") == {"router", "backupd"}
    assert to_replace({"controller"}, groups, "gateway") == {"roles"}
    assert to_replace({"controller"}, {}, "builder") == {"controller"}


def test_reads_lists_every_address_each_daemon_connects_to() -> None:
    # Each daemon reads the address book at its start: one that reads an
    # address READS does not list would keep the old one after a move.
    packages = {"backupd": "backups"}
    for daemon, reads in readdress.READS.items():
        code = "".join(
            p.read_text() for p in (REPO / "src/roost" / packages.get(daemon, daemon)).rglob("*.py")
        )
        found = set(re.findall(r'\.of\("([a-z-]+)"\)', code))
        assert found == reads, daemon
    assert set(readdress.READS) == set(SERVED_BY.values()) | {"runner", "router"}


# ------------------------------------------------------------------ Readdress's I/O


@dataclass
class FakeSup:
    children: dict[str, Child]
    stopping: bool = False
    replaced: list[tuple[str, int, bool]] = field(default_factory=list)

    async def replace(self, name: str, sig: int, timeout: float, overlap: bool) -> tuple[int, int]:
        self.replaced.append((name, sig, overlap))
        return 1, 2


def failed(name: str, error: str, at: float = 5.0) -> Child:
    return Child(name, 1, state="backoff", last_error=error, ended_at=at)


@pytest.fixture
def held() -> Iterator[socket.socket]:
    """A port another process listens on."""
    with socket.create_server(("127.0.0.1", free_port())) as s:
        yield s


async def test_a_taken_address_moves_and_its_readers_are_replaced(
    tmp_path: Path, held: socket.socket
) -> None:
    taken = held.getsockname()[1]
    images = free_port()
    book(controller=free_port(), builder=taken, images=images).save(tmp_path / "cluster.json")
    said: list[str] = []
    metrics = {"builder": f"http://127.0.0.1:{free_port()}/metrics"}
    moves = Readdress(tmp_path, "127.0.0.1", metrics, {}, said.append)
    error = f"builder: ZMQError: Address already in use (addr='tcp://127.0.0.1:{taken}')"
    moves.before_start("builder", failed("builder", error))
    after = ClusterConfig.load(tmp_path / "cluster.json")
    port = int(after.of("builder")[0].address.rsplit(":", 1)[1])
    assert port != taken
    with socket.create_server(("127.0.0.1", port)):
        pass  # free: the builder can bind it
    assert after.of("images") == book(images=images).of("images")  # free: left alone
    assert said == [
        f"builder: port {taken} is in use by another process: "
        f"its builder address moves to 127.0.0.1:{port}"
    ]
    # An exit is handled once: a start after no new exit moves nothing,
    # though the port be taken then (by the daemon itself, say).
    with socket.create_server(("127.0.0.1", port)):
        moves.before_start("builder", failed("builder", error))
    assert ClusterConfig.load(tmp_path / "cluster.json") == after
    assert not (tmp_path / "metrics.json").exists()
    # The controller reads the builder's address: replaced, as a reload replaces it.
    sup = FakeSup({"controller": Child("controller", 0), "builder": Child("builder", 1)})
    steps = [Step("controller", signal.SIGTERM), Step("builder", signal.SIGTERM)]
    await _run_once(moves, sup, steps)
    assert sup.replaced == [("controller", signal.SIGTERM, False)]


async def test_a_taken_metrics_port_moves_without_touching_the_address_book(
    tmp_path: Path, held: socket.socket
) -> None:
    taken = held.getsockname()[1]
    gateway = free_port()
    book(gateway=gateway).save(tmp_path / "cluster.json")
    before = (tmp_path / "cluster.json").read_bytes()
    metrics = {"gateway": f"http://127.0.0.1:{taken}/metrics"}
    moves = Readdress(tmp_path, "127.0.0.1", metrics, {}, lambda _: None)
    # prometheus_client's bind names no address: the gateway's taken port is found.
    moves.before_start("gateway", failed("gateway", "OSError: [Errno 98] Address already in use"))
    port = readdress.port_of(metrics["gateway"])
    assert port not in (None, taken)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert (tmp_path / "cluster.json").read_bytes() == before
    sup = FakeSup({"backupd": Child("backupd", 0)})
    await _run_once(moves, sup, [Step("backupd", signal.SIGTERM)])
    assert sup.replaced == []  # no address moved: no one to tell


def test_the_ports_held_for_a_program_are_let_go_as_it_starts(tmp_path: Path) -> None:
    address, metrics_port, other = (free_port(held=True) for _ in range(3))
    book(builder=address, gateway=other).save(tmp_path / "cluster.json")
    metrics = {"builder": f"http://127.0.0.1:{metrics_port}/metrics"}
    try:
        assert not port_free("127.0.0.1", address)
        Readdress(tmp_path, "127.0.0.1", metrics, {}, lambda _: None).before_start("builder", None)
        # Its own: free for its daemon to bind; the gateway's: held still.
        assert port_free("127.0.0.1", address) and port_free("127.0.0.1", metrics_port)
        assert not port_free("127.0.0.1", other)
    finally:
        release([address, metrics_port, other])


async def test_an_exit_for_another_reason_moves_nothing(tmp_path: Path) -> None:
    book(builder=free_port()).save(tmp_path / "cluster.json")
    before = (tmp_path / "cluster.json").read_bytes()
    moves = Readdress(tmp_path, "127.0.0.1", {}, {}, lambda _: None)
    moves.before_start("builder", None)  # not supervised yet
    moves.before_start("builder", Child("builder", 1))  # a first start
    moves.before_start("builder", failed("builder", "builder: ValueError: bad"))
    assert (tmp_path / "cluster.json").read_bytes() == before


async def _run_once(moves: Readdress, sup: Any, steps: list[Step]) -> None:
    task = asyncio.create_task(moves.run(sup, steps, lambda _: 5.0))
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# ------------------------------------------------------------------ a real roost up


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    data: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def roost(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "roost", "--data", str(self.data), *args],
            capture_output=True,
            text=True,
            timeout=180,
            env={k: v for k, v in os.environ.items() if k not in ("ROOST_API", "ROOST_TOKEN")},
        )


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="roost-readdress-"))
    path.chmod(0o755)  # the build and service users walk through it
    try:
        yield path
    finally:
        left = processes_under(path)
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(left, timeout=10)
        shutil.rmtree(path, ignore_errors=True)


def start_up(base: Path, role_host: str) -> Up:
    data = base / "data"
    argv = [sys.executable, "-m", "roost", "--data", str(data), "up"]
    for option in ("--api-port", "--router-port", "--tls-port", "--ssh-port"):
        argv += [option, str(free_port())]
    env = dict(os.environ, ROOST_ROLE_HOST=role_host, ROOST_BACKUP_SCHEDULE="off")
    env.pop("ROOST_API", None)
    env.pop("ROOST_TOKEN", None)
    log = base / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return Up(proc, data, log)


def take_when_let_go(up: Up, role: str) -> tuple[socket.socket, int]:
    """Listen on `role`'s port the moment `roost up` lets go of it, just
    before the role starts (it holds it from its choice: roost.cli.local.hold)
    and binds it, a second or so later: what another process may do. With
    how many tries it took."""
    path = up.data / "cluster.json"
    deadline = time.monotonic() + 120
    port = None
    tries = 0
    while True:
        assert up.proc.poll() is None, up.output()[-4000:]
        assert time.monotonic() < deadline, f"{role}'s port {port} never let go"
        try:
            if port is None:
                port = readdress.port_of(ClusterConfig.load(path).of(role)[0].address)
            if port is not None:
                tries += 1
                return socket.create_server(("127.0.0.1", port)), tries
        except (OSError, ValueError, IndexError):
            time.sleep(0.002)


def stop(up: Up) -> None:
    up.proc.send_signal(signal.SIGTERM)
    try:
        up.proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(up.proc.pid, signal.SIGKILL)
        up.proc.wait()
        raise
    assert processes_under(up.data) == []


@pytest.mark.e2e
@pytest.mark.parametrize("role_host", ["off", "on"])
def test_a_builder_whose_port_was_taken_serves_on_another_and_builds(
    base: Path, role_host: str
) -> None:
    # "off": the builder alone, started once the controller serves, which
    # must be replaced to learn the new address; "on": the builder shares a
    # process with the controller, which starts again with it.
    up = start_up(base, role_host)
    try:
        taken, tries = take_when_let_go(up, "builder")
        with taken:
            taken_port = taken.getsockname()[1]
            if role_host == "off":
                # Held until the builder starts, once the controller serves.
                assert tries > 1
            r = up.roost("status", "--wait", "--timeout", "90", "--pid", str(up.proc.pid))
            assert r.returncode == 0, r.stdout + r.stderr + up.output()[-6000:]
            out = up.output()
            assert f"port {taken_port} is in use by another process" in out, out[-6000:]
            address = ClusterConfig.load(up.data / "cluster.json").of("builder")[0].address
            assert readdress.port_of(address) != taken_port
            if role_host == "off":
                assert "replacing controller: an address it reads has moved" in out
            # The controller reaches the builder at its new address: a build
            # starts (and fails at once, on a requirement pip cannot read).
            app = base / "app"
            shutil.copytree(REPO / "examples" / "hello", app)
            (app / "requirements.txt").write_text("!!! not a requirement\n")
            r = up.roost("apps", "create", "moved")
            assert r.returncode == 0, r.stdout + r.stderr
            r = up.roost("deploy", str(app), "--app", "moved")
            assert "-----> building moved" in r.stdout, r.stdout + r.stderr + out[-4000:]
            assert "cannot resolve the requirements" in r.stdout + r.stderr
    finally:
        stop(up)
