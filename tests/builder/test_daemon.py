"""The builder daemon over real CURVE sockets, with a stand-in controller."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from roost.builder.daemon import serve
from roost.images.cache import ImageCache
from roost.images.fetch import fetch_image
from roost.images.manifest import read_manifest
from roost.settings import Settings
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.identity import ensure_member, identity
from roost.wire.keys import load_public_keys
from roost.wire.messages import (
    BuildAccepted,
    BuildEnv,
    BuildEnvRequest,
    BuildLog,
    BuildRequest,
    BuildResult,
    Msg,
    Ok,
)
from roost.wire.node import Node
from roost.wire.rpc import RpcClient, RpcServer

from .conftest import EXAMPLES, tar_dir


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_build_request_to_result_and_image_fetch(builder_root: Path) -> None:
    data = Path(tempfile.mkdtemp(prefix="roost-daemon-test-"))
    os.chmod(data, 0o755)
    try:
        keys = data / "keys"
        b, c, r = (
            ensure_member(keys, n, identity(n, "local"))
            for n in ("builder", "controller", "runner")
        )
        # Share the session's uv cache so this test downloads nothing new.
        (data / "builder").mkdir()
        (builder_root / "uv-cache").mkdir(parents=True, exist_ok=True)
        os.symlink(builder_root / "uv-cache", data / "builder" / "uv-cache")
        ep = {r: f"tcp://127.0.0.1:{free_port()}" for r in ("builder", "images", "controller")}
        ClusterConfig(
            endpoints={
                "builder": [Endpoint(ep["builder"], b.public_text)],
                "images": [Endpoint(ep["images"], b.public_text)],
                "controller": [Endpoint(ep["controller"], c.public_text)],
            }
        ).save(data / "cluster.json")
        received: list[Msg] = []
        result = asyncio.Event()

        async def controller(msg: Msg) -> Msg:
            received.append(msg)
            if isinstance(msg, BuildResult):
                result.set()
            if isinstance(msg, BuildEnvRequest):  # what the build's code steps see
                return BuildEnv(build_id=msg.build_id, env={"SECRET_KEY": "from the controller"})
            return Ok()

        stop = asyncio.Event()
        async with Node(c, load_public_keys(keys)) as cn, Node(r, []) as rn:
            server = RpcServer(cn, ep["controller"], controller)
            srv = asyncio.create_task(server.serve())
            daemon = asyncio.create_task(serve(data, Settings(), "builder", stop))
            client = RpcClient(cn, [Endpoint(ep["builder"], b.public_text)])
            req = BuildRequest(build_id="d1", app="hello", archive=tar_dir(EXAMPLES / "hello"))
            reply = await client.call(req, timeout=10, tries=3)
            assert reply == BuildAccepted(build_id="d1")
            await asyncio.wait_for(result.wait(), timeout=180)
            logs = [ln for m in received if isinstance(m, BuildLog) for ln in m.lines]
            res = next(m for m in received if isinstance(m, BuildResult))
            assert res.ok, res.error
            assert any(ln.startswith("-----> install (") for ln in logs)
            assert any(ln.startswith("-----> pack (") for ln in logs)
            asked = [m for m in received if isinstance(m, BuildEnvRequest)]
            assert [m.build_id for m in asked] == ["d1"] and "web" in asked[0].spec.processes
            assert "       1 config vars; bundle_config: no services" in logs
            assert received.index(res) == len(received) - 1  # result after the last log
            assert res.spec is not None and res.lock_digest.startswith("sha256:")
            # A fresh cache (a runner's) fetches the manifest and its layers over
            # CURVE, verifies and composes them; the app's venv works from there.
            # Image chunks go to runners (and routers) only: fetch as a runner.
            images = RpcClient(rn, [Endpoint(ep["images"], b.public_text)])

            async def fetcher(digest: str, dest: Path) -> Path:
                return await fetch_image(images, digest, dest)

            cache = ImageCache(data / "runner-cache", 1 << 34)
            root = await cache.ensure(res.image_digest, fetcher, pin=True)
            got = await fetch_image(images, res.image_digest, data / "dl")
            manifest = read_manifest(got)
            assert manifest is not None
            assert [lr.path for lr in manifest.layers] == ["venv", "", "python"]  # interpreter
            assert res.image_size == got.stat().st_size + manifest.size
            assert (root / "venv").is_symlink() and (root / "app" / "app.py").is_file()
            cwd = root / "app"
            for argv in (
                [root / "venv" / "bin" / "python", "-c", "import flask, app; print(app.app.name)"],
                [root / "venv" / "bin" / "python", "-m", "gunicorn", "--version"],
                [root / "venv" / "bin" / "gunicorn", "--version"],  # a console script
            ):
                done = await asyncio.to_thread(
                    subprocess.run, argv, cwd=cwd, capture_output=True, text=True, timeout=60
                )
                assert done.returncode == 0, (argv, done.stderr)
            stop.set()
            await asyncio.wait_for(daemon, timeout=30)
            await images.close()
            await client.close()
            srv.cancel()
    finally:
        shutil.rmtree(data, ignore_errors=True)
