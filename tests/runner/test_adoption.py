"""A runner killed with SIGKILL leaves its instances running under their
shims; the next runner adopts them (real shims, sandboxes and cgroups)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from roost.runner.layout import Layout
from roost.runner.model import Policy
from roost.runner.shimclient import discover
from roost.runner.supervisor import Supervisor
from roost.wire.messages import InstanceAssignment, LogLine
from tests.conftest import processes_under
from tests.runner.helpers import (
    DIGEST_A,
    FakeImages,
    alive,
    assignment,
    command_spec,
    eventually,
    make_image_root,
    make_tenancy,
)

REPO = Path(__file__).resolve().parents[2]
POLICY = Policy(
    backoff_base_s=0.05, backoff_max_s=0.4, settle_s=0.3, startup_timeout_s=20.0, stop_grace_s=1.0
)

# Counts for as long as it lives: a gap or a restart shows in the numbers.
TICKER = """
import time
n = 0
while True:
    print("tick", n, flush=True)
    n += 1
    time.sleep(0.02)
"""

# Exits with 3 once its data directory holds `quit-now` (which it removes).
QUITTER = """
import pathlib, sys, time
trigger = pathlib.Path("../data/quit-now")
while not trigger.exists():
    time.sleep(0.02)
trigger.unlink()
print("bye: asked to quit", file=sys.stderr, flush=True)
sys.exit(3)
"""

# Answers with a token drawn at its start: the same token is the same process.
SERVER = """
import http.server, os
TOKEN = os.urandom(8).hex().encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(TOKEN)))
        self.end_headers()
        self.wfile.write(TOKEN)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""

FIRST_RUNNER = """
import asyncio, sys
from pathlib import Path
from tests.runner.test_adoption import first_runner
asyncio.run(first_runner(Path(sys.argv[1])))
"""


def desired() -> list[InstanceAssignment]:
    def worker(iid: str, command: str) -> InstanceAssignment:
        spec = command_spec(command, web=False, name="worker")
        return assignment(iid, process_type="worker", spec=spec)

    return [
        assignment("w1", spec=command_spec("python server.py")),
        worker("t1", "python ticker.py"),
        worker("q1", "python quitter.py"),
        # Assigned to the first runner only: the second stops it.
        worker("x1", "sleep 300"),
    ]


def supervisor(tmp: Path, logs: list[LogLine], keep: set[str] | None = None) -> Supervisor:
    layout = Layout(tmp / "data")
    layout.create()
    return Supervisor(
        layout=layout,
        images=FakeImages({DIGEST_A: tmp / "image"}),
        policy=POLICY,
        emit=logs.append,
        tenancy=make_tenancy(tmp, keep or set()),
    )


async def first_runner(tmp: Path) -> None:
    """The runner to kill (in a process of its own): starts the instances,
    says their pids and the web port, then waits for its SIGKILL."""
    sup = supervisor(tmp, [])
    task = asyncio.create_task(sup.run())
    sup.set_desired(desired())
    recs = sup.records
    await eventually(lambda: len(recs) == 4 and all(r.state == "up" for r in recs.values()))
    print(json.dumps({"port": recs["w1"].port, **{i: r.pid for i, r in recs.items()}}), flush=True)
    await task


async def test_a_new_runner_adopts_what_a_killed_one_left(tmp_path: Path) -> None:
    try:
        await adopts_what_a_killed_one_left(tmp_path)
    finally:
        # A failure before the new runner took them over leaves the shims
        # and their instances running: nothing else would stop them.
        for p in processes_under(tmp_path):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


async def adopts_what_a_killed_one_left(tmp_path: Path) -> None:
    files = {"server.py": SERVER, "ticker.py": TICKER, "quitter.py": QUITTER}
    make_image_root(tmp_path / "image", files)
    runner = subprocess.Popen(
        [sys.executable, "-c", FIRST_RUNNER, str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert runner.stdout is not None
        said = json.loads(await asyncio.to_thread(runner.stdout.readline))
    finally:
        runner.kill()
        runner.wait()
    port = said.pop("port")
    pids: dict[str, int] = said
    async with httpx.AsyncClient() as client:
        token = (await client.get(f"http://127.0.0.1:{port}/")).text
    assert all(alive(pid) for pid in pids.values()), "an instance died with its runner"

    # While no runner is there, one instance exits.
    layout = Layout(tmp_path / "data")
    (layout.data_directory("demo") / "quit-now").write_text("")
    await eventually(lambda: not alive(pids["q1"]), what="the quitter to exit")

    found = await discover(layout.shims)
    assert sorted(rec.instance_id for rec, _ in found) == ["q1", "t1", "w1", "x1"]
    logs: list[LogLine] = []
    sup = supervisor(tmp_path, logs, keep={rec.unit for rec, _ in found})
    sup.adopt(found)
    # Reported at once as they were: same pids, port, states.
    assert {iid: r.pid for iid, r in sup.records.items()} == pids
    assert {r.state for r in sup.records.values()} == {"up"}
    assert sup.records["w1"].port == port
    task = asyncio.create_task(sup.run())
    try:
        sup.set_desired(desired()[:3])

        def ticks() -> list[int]:
            return [
                int(x.line.split()[1])
                for x in logs
                if x.instance_id == "t1" and x.line.startswith("tick")
            ]

        await eventually(lambda: len(ticks()) > 50, what="the ticker's output")
        seen = ticks()
        # Its output kept flowing through the shim: no gap, no restart.
        assert seen[0] > 0 and seen == list(range(seen[0], seen[0] + len(seen)))
        assert sup.records["t1"].pid == pids["t1"] and sup.records["t1"].restarts == 0
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/")).text == token
        assert sup.records["w1"].pid == pids["w1"] and sup.records["w1"].state == "up"

        # The exit that happened meanwhile is reported, as a crash, and restarted.
        await eventually(lambda: sup.records["q1"].restarts >= 1, what="the quitter restarted")
        assert sup.records["q1"].last_error == "exited with code 3\nbye: asked to quit"
        platform = [x.line for x in logs if x.source == "platform"]
        assert any(x.startswith("worker.2 exited with code 3; restarting in") for x in platform)
        assert sup.records["q1"].pid != pids["q1"]

        # One no longer assigned is stopped as any would be (TERM first).
        await eventually(lambda: "x1" not in sup.records, what="x1 stopped and forgotten")
        platform = [x.line for x in logs if x.source == "platform"]
        assert "stopping worker.3 (no longer assigned)" in platform
        assert "worker.3 stopped" in platform
        assert not alive(pids["x1"])
    finally:
        sup.shutdown()
        await asyncio.wait_for(task, 30)
        sup.tenancy.close()
    assert not any(alive(pid) for pid in pids.values())
    assert list(layout.shims.iterdir()) == []
