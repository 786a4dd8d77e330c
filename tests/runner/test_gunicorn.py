"""A real gunicorn instance, rendered by roost.appspec.runtime, supervised by the runner."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import psutil

from roost.appspec.model import AppSpec, ProcessSpec
from roost.runner import backlog
from roost.runner.layout import Layout
from roost.runner.model import Policy
from roost.runner.supervisor import Supervisor
from roost.wire.messages import LogLine
from tests.runner.helpers import (
    DIGEST_A,
    FakeImages,
    alive,
    assignment,
    eventually,
    make_image_root,
)

WSGI_APP = """
import os

def application(environ, start_response):
    body = ("hello from %s" % os.environ["ROOST_PROCESS"]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


async def test_gunicorn_answers_on_unix_socket_and_tcp_port(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "data")
    layout.create()
    root = make_image_root(tmp_path / "image", {"hello.py": WSGI_APP})
    spec = AppSpec(
        processes={
            "web": ProcessSpec(name="web", kind="wsgi", entrypoint="hello:application", web=True)
        }
    )
    images = FakeImages({DIGEST_A: root})
    logs: list[LogLine] = []
    policy = Policy(stop_grace_s=10.0, startup_timeout_s=60.0)
    sup = Supervisor(layout=layout, images=images, policy=policy, emit=logs.append)
    task = asyncio.create_task(sup.run())
    try:
        sup.set_desired([assignment("g1", spec=spec)])
        await eventually(
            lambda: (r := sup.records.get("g1")) and r.state == "up", timeout=60, what="gunicorn up"
        )
        rec = sup.records["g1"]
        assert "-m gunicorn" in rec.command and f"unix:{rec.unix_socket}" in rec.command
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{rec.port}/")
        assert r.status_code == 200 and r.text.startswith("hello from web.1")
        uds = httpx.AsyncHTTPTransport(uds=rec.unix_socket)
        async with httpx.AsyncClient(transport=uds) as client:
            r = await client.get("http://app/")
        assert r.status_code == 200 and r.text.startswith("hello from web.1")

        # gunicorn's arbiter and its two workers, all in the instance's group.
        # Up means it answers: the first worker does before the arbiter has
        # forked the second, so wait for it.
        def family() -> list[psutil.Process]:
            arbiter = psutil.Process(rec.pid)
            return [arbiter, *arbiter.children(recursive=True)]

        await eventually(lambda: len(family()) == 3, timeout=30, what="gunicorn's two workers")
        tree = family()
        assert len(tree) == 3 and all(p.pid == rec.pid or p.ppid() == rec.pid for p in tree)
        pids = [p.pid for p in tree]
        assert any("Booting worker" in x.line for x in logs if x.instance_id == "g1")

        sup.set_desired([])
        await eventually(lambda: "g1" not in sup.records, timeout=30, what="gunicorn stopped")
        assert not any(alive(pid) for pid in pids)
        assert not Path(rec.unix_socket).exists()
        # gunicorn shut down on SIGTERM by itself: no SIGKILL needed.
        assert not any("killing it" in x.line for x in logs)
    finally:
        sup.shutdown()
        await asyncio.wait_for(task, 30)


SLOW_APP = """
import time

def application(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(2)
    body = b"done"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


async def test_requests_queued_at_stop_are_answered_not_reset(tmp_path: Path) -> None:
    """Both workers busy, four requests waiting in the accept queue, and the
    instance is told to stop: the runner waits for the queue to empty before
    TERM, so each waiting request is answered (gunicorn's workers stop
    accepting at TERM, and the listener's close would reset them)."""
    layout = Layout(tmp_path / "data")
    layout.create()
    root = make_image_root(tmp_path / "image", {"slow.py": SLOW_APP})
    spec = AppSpec(
        processes={
            "web": ProcessSpec(name="web", kind="wsgi", entrypoint="slow:application", web=True)
        }
    )
    images = FakeImages({DIGEST_A: root})
    policy = Policy(stop_grace_s=10.0, startup_timeout_s=60.0)
    sup = Supervisor(layout=layout, images=images, policy=policy, emit=lambda _: None)
    task = asyncio.create_task(sup.run())
    try:
        sup.set_desired([assignment("q1", spec=spec)])
        await eventually(
            lambda: (r := sup.records.get("q1")) and r.state == "up", timeout=60, what="gunicorn up"
        )
        rec = sup.records["q1"]
        await eventually(
            lambda: len(psutil.Process(rec.pid).children()) == 2, timeout=30, what="two workers"
        )
        transport = httpx.AsyncHTTPTransport(uds=rec.unix_socket)
        async with httpx.AsyncClient(transport=transport, timeout=60) as client:
            slow = [asyncio.create_task(client.get("http://app/slow")) for _ in range(2)]
            await asyncio.sleep(0.5)  # both workers now sleep in /slow
            waiting = [asyncio.create_task(client.get("http://app/")) for _ in range(4)]
            await eventually(
                lambda: backlog.unix_backlogs().get(rec.unix_socket) == 4,
                timeout=10,
                what="four connections queued",
            )
            sup.set_desired([])
            results = await asyncio.gather(*slow, *waiting, return_exceptions=True)
        assert [getattr(r, "status_code", r) for r in results] == [200] * 6
        await eventually(lambda: "q1" not in sup.records, timeout=30, what="gunicorn stopped")
    finally:
        sup.shutdown()
        await asyncio.wait_for(task, 30)
