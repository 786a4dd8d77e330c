"""The runner daemon as a real process against a fake controller (real CURVE keys).

The test process plays the controller (heartbeats, log batches) and the image
store (image chunks from a real ImageStore), both over roost.wire; the runner
runs `roost.runner.daemon.run` in a subprocess, fetches the image through
roost.images, and is stopped with SIGTERM at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller.nudge import Nudger
from roost.images.store import ImageStore
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.identity import identity, save_peers
from roost.wire.keys import generate_keypair, write_keypair
from roost.wire.messages import (
    Assignment,
    AssignmentReady,
    Heartbeat,
    InstanceAssignment,
)
from roost.wire.node import Node
from roost.wire.rpc import RpcClient, RpcServer
from tests.conftest import free_port
from tests.runner.helpers import (
    H1,
    FakeController,
    alive,
    eventually,
    make_image_root,
    runner_argv,
    short_data_dir,
)

SERVER = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["ROOST_PROCESS"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
print("listening on", os.environ["PORT"], flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""

SPEC = AppSpec(
    processes={
        "web": ProcessSpec(name="web", kind="command", command="python server.py", web=True),
        "worker": ProcessSpec(name="worker", kind="command", command="sleep 300"),
    }
)


def inst(iid: str, process_type: str, digest: str, release: int = 1) -> InstanceAssignment:
    return InstanceAssignment(
        instance_id=iid,
        app="demo",
        release=release,
        image_digest=digest,
        process_type=process_type,
        spec=SPEC,
        app_id=1,
    )


def build_image(tmp: Path, store: ImageStore) -> str:
    root = make_image_root(tmp / "image", {"server.py": SERVER})
    archive = tmp / "image.tar"
    with tarfile.open(archive, "w") as tf:
        for name in ("app", "venv", "roost-image.json"):
            tf.add(root / name, arcname=name)
    return store.put_file(archive)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with short_data_dir() as d:
        yield d


async def test_daemon_converges_fences_and_stops(data_dir: Path, tmp_path: Path) -> None:
    runner_kp, ctrl_kp = generate_keypair(), generate_keypair()
    write_keypair(data_dir / "keys", "runner", runner_kp)
    write_keypair(data_dir / "keys", "controller", ctrl_kp)
    store = ImageStore(tmp_path / "store")
    digest = build_image(tmp_path, store)
    fake = FakeController(store)
    log_path = tmp_path / "runner.log"
    async with Node(ctrl_kp, [runner_kp.public]) as node:
        ctrl = RpcServer(node, "tcp://127.0.0.1:*", fake.handle)
        images = RpcServer(node, "tcp://127.0.0.1:*", fake.handle)
        servers = [asyncio.create_task(ctrl.serve()), asyncio.create_task(images.serve())]
        ClusterConfig(
            endpoints={
                "controller": [Endpoint(ctrl.address, ctrl_kp.public_text)],
                "images": [Endpoint(images.address, ctrl_kp.public_text)],
            }
        ).save(data_dir / "cluster.json")
        metrics_port = free_port()
        env = {
            **os.environ,
            "ROOST_HEARTBEAT_S": "0.2",
            "ROOST_STOP_GRACE_S": "3",
            "ROOST_METRICS_PORT": str(metrics_port),
        }
        with open(log_path, "wb") as log_file:
            runner = subprocess.Popen(
                runner_argv(data_dir),
                env=env,
                stderr=log_file,
                stdout=log_file,
            )
        try:
            await _scenario(fake, digest, runner, metrics_port)
            text = log_path.read_text()
            assert f"refused assignment fence=1 version=99 for {H1} (stale-fence" in text
            assert "no controller answered" in text and text.count("controllers reachable") == 2
        except BaseException:
            print(log_path.read_text())
            for x in fake.lines[-15:]:
                print("shipped:", x.ts, x.source, x.process, x.line)
            raise
        finally:
            if runner.poll() is None:
                runner.kill()
                runner.wait()
            for task in servers:
                task.cancel()
            await asyncio.gather(*servers, return_exceptions=True)


async def _scenario(
    fake: FakeController, digest: str, runner: subprocess.Popen[bytes], metrics_port: int
) -> None:
    # Reports before any assignment: empty host, capacity, stable id.
    await eventually(lambda: fake.heartbeats, what="first heartbeat")
    first = fake.last()
    assert first.host_id == H1 and first.instances == [] and (first.fence, first.version) == (0, 0)
    assert first.memory_mb > 0 and first.cpus > 0 and first.addresses

    # 1. Converge to an assignment: fetch the image over the wire, start both.
    fake.assignment = Assignment(
        host_id=H1,
        fence=2,
        version=1,
        instances=[inst("i1", "web", digest), inst("w1", "worker", digest)],
    )
    await eventually(lambda: fake.states() == {"i1": "up", "w1": "up"}, what="both up")
    hb = fake.last()
    assert (hb.fence, hb.version) == (2, 1)
    web = next(i for i in hb.instances if i.instance_id == "i1")
    assert web.port > 0 and web.memory_mb > 0 and web.command.endswith("exec python server.py'")
    assert web.unix_socket.endswith("i1/web.sock")
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{web.port}/")).text == "web.1"
    await eventually(
        lambda: any(x.line.startswith("listening on") and x.process == "web.1" for x in fake.lines),
        what="app log line shipped",
    )
    assert any(
        x.source == "platform" and x.line.startswith("starting worker.1") for x in fake.lines
    )
    pids = fake.pids()
    async with httpx.AsyncClient() as client:
        scrape = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    assert 'roost_runner_instances{state="up"} 2.0' in scrape
    assert "roost_runner_controllers_reachable 1.0" in scrape

    # 2. Fencing: a deposed scheduler (lower fence) and an older version are ignored.
    for stale in (
        Assignment(host_id=H1, fence=1, version=99, instances=[]),
        Assignment(host_id=H1, fence=2, version=0, instances=[]),
    ):
        fake.assignment = stale
        seen = len(fake.heartbeats)
        await eventually(lambda: len(fake.heartbeats) >= seen + 5, what="more heartbeats")  # noqa: B023
        assert (fake.last().fence, fake.last().version) == (2, 1)
        assert fake.states() == {"i1": "up", "w1": "up"} and fake.pids() == pids

    # 3. A newer version drops the worker: it is stopped.
    fake.assignment = Assignment(
        host_id=H1, fence=2, version=2, instances=[inst("i1", "web", digest)]
    )
    await eventually(lambda: fake.states() == {"i1": "up"}, what="worker stopped")
    assert not alive(pids["w1"]) and alive(pids["i1"])

    # 4. Every controller gone: instances keep running.
    fake.down = True
    seen = len(fake.heartbeats)
    await eventually(lambda: len(fake.heartbeats) >= seen + 3, what="unanswered heartbeats")
    assert alive(pids["i1"])

    # 5. Back, with a new scheduler whose assignment no longer holds i1: stopped at once.
    fake.assignment = Assignment(
        host_id=H1, fence=3, version=1, instances=[inst("i2", "web", digest, release=2)]
    )
    fake.down = False
    await eventually(lambda: fake.states() == {"i2": "up"}, what="switch to i2")
    assert not alive(pids["i1"])
    i2 = fake.pids()["i2"]
    await eventually(
        lambda: any(x.line == "stopping web.1 (no longer assigned)" for x in fake.lines),
        what="stop logged",
    )

    # 6. SIGTERM: the runner stops its instances and exits cleanly.
    runner.send_signal(signal.SIGTERM)
    rc = await asyncio.to_thread(runner.wait, 30)
    assert rc == 0
    assert not alive(i2)
    assert fake.last().instances == []  # the farewell heartbeat


async def test_a_nudge_from_the_lease_holder_fetches_the_assignment_at_once(
    data_dir: Path, tmp_path: Path
) -> None:
    """With a heartbeat period of 60 s, a new assignment would wait up to a
    minute; the controller's AssignmentReady (sent by its real Nudger over
    CURVE to the runner's RPC endpoint) makes the runner beat now. A hint
    for what it holds already changes nothing."""
    runner_kp, ctrl_kp = generate_keypair(), generate_keypair()
    write_keypair(data_dir / "keys", "runner", runner_kp)
    write_keypair(data_dir / "keys", "controller", ctrl_kp)
    # The runner's RPC server admits the controller (as the cluster's peers.json would).
    save_peers(data_dir / "keys", {ctrl_kp.public: identity("controller", "c1")})
    store = ImageStore(tmp_path / "store")
    digest = build_image(tmp_path, store)
    fake = FakeController(store)
    log_path = tmp_path / "runner.log"
    nudger = Nudger()
    async with Node(ctrl_kp, [runner_kp.public]) as node:
        ctrl = RpcServer(node, "tcp://127.0.0.1:*", fake.handle)
        server = asyncio.create_task(ctrl.serve())
        ClusterConfig(
            endpoints={
                "controller": [Endpoint(ctrl.address, ctrl_kp.public_text)],
                "images": [Endpoint(ctrl.address, ctrl_kp.public_text)],
            }
        ).save(data_dir / "cluster.json")
        env = {**os.environ, "ROOST_HEARTBEAT_S": "60", "ROOST_METRICS_PORT": str(free_port())}
        with open(log_path, "wb") as log_file:
            runner = subprocess.Popen(
                runner_argv(data_dir), env=env, stderr=log_file, stdout=log_file
            )
        try:
            first = await eventually(lambda: fake.heartbeats and fake.last(), what="first beat")
            assert isinstance(first, Heartbeat) and first.rpc_endpoint
            ep = Endpoint(first.rpc_endpoint, first.rpc_key)

            def nudge(fence: int, version: int) -> None:
                ready = AssignmentReady(fence=fence, version=version)
                nudger.send([(H1, ep, ready)], lambda e: RpcClient(node, [e]))

            fake.assignment = Assignment(
                host_id=H1, fence=2, version=1, instances=[inst("i1", "web", digest)]
            )
            nudge(2, 1)
            await eventually(lambda: fake.states() == {"i1": "up"}, 30, "i1 up, long before 60 s")
            # Held now: the same hint again asks for no beat (the instance
            # coming up made its own; let those settle first).
            await asyncio.sleep(1.0)
            seen = len(fake.heartbeats)
            nudge(2, 1)
            await asyncio.sleep(1.0)
            assert len(fake.heartbeats) == seen
        except BaseException:
            print(log_path.read_text())
            raise
        finally:
            await nudger.close()
            runner.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(runner.wait, 30)
            finally:
                if runner.poll() is None:
                    runner.kill()
                    runner.wait()
                server.cancel()
                await asyncio.gather(server, return_exceptions=True)
