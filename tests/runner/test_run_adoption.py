"""Runs and cron jobs outlive their runner: a fenced RunStart (a cron job)
whose runner is SIGKILLed mid-job goes on under its shim; the next runner
adopts it, and the controller's next poll carries on from what it had (no
gap, nothing twice), to one exit status. A `run` session with a terminal
keeps its input, window and output across a hand-over. Real shims,
sandboxes and cgroups."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from roost.runner import shimsession
from roost.runner.layout import Layout
from roost.runner.rpcserver import RunnerRpc
from roost.sessions.server import ExecSessions
from roost.tenant.launch import Tenancy
from roost.wire.messages import (
    Error,
    ExecClose,
    ExecInput,
    ExecOutput,
    ExecPoll,
    ExecResize,
    Ok,
    RunStart,
)
from tests.runner.helpers import (
    DIGEST_A,
    FakeImages,
    alive,
    assignment,
    eventually,
    make_image_root,
    make_tenancy,
)

REPO = Path(__file__).resolve().parents[2]

# Counts until its data directory holds `go`, then exits 7; notes each start.
JOB = (
    "echo started >> ../data/starts; i=0; "
    "while [ ! -e ../data/go ]; do echo tick $i; i=$((i+1)); sleep 0.02; done; "
    "echo done; exit 7"
)
JOB_START = RunStart(
    session="cron-1", assignment=assignment("cron-1", process_type="cron"), command=JOB, fence=5
)

FIRST_RUNNER = """
import asyncio, sys
from pathlib import Path
from tests.runner.test_run_adoption import first_runner
asyncio.run(first_runner(Path(sys.argv[1])))
"""


def runner(tmp: Path, tenancy: Tenancy) -> tuple[RunnerRpc, ExecSessions, FakeImages]:
    layout = Layout(tmp / "data")
    layout.create()
    images = FakeImages({DIGEST_A: tmp / "image"})
    holder = shimsession.ShimHolder(layout.root / "session-shims")
    sessions = ExecSessions(idle_s=30, grace_s=1, holder=holder)
    return RunnerRpc(layout, images, sessions, tenancy=tenancy), sessions, images


async def first_runner(tmp: Path) -> None:
    """The runner to kill: starts the job, polls some of its output without
    acknowledging it, says the last number seen, waits for its SIGKILL."""
    rpc, sessions, _ = runner(tmp, make_tenancy(tmp))
    serving = asyncio.create_task(sessions.run())
    assert isinstance(await rpc.start(JOB_START), Ok)
    seen: list[str] = []
    seq = 0
    while len(seen) < 5:
        out = await sessions.handle(ExecPoll(session="cron-1", after=0, wait_s=1.0))
        assert isinstance(out, ExecOutput)
        seen = b"".join(c.data for c in out.chunks).decode().splitlines()
        seq = max([0, *(c.seq for c in out.chunks)])
        await asyncio.sleep(0.05)  # a poll with output waits for nothing: let it come
    pid = sessions.sessions["cron-1"].pid
    print(json.dumps({"seq": seq, "seen": seen, "pid": pid}), flush=True)
    await serving  # until the SIGKILL


async def drain(sessions: ExecSessions, sid: str, after: int) -> tuple[list[int], bytes, int]:
    seqs: list[int] = []
    data = b""
    while True:
        out = await sessions.handle(ExecPoll(session=sid, after=after, wait_s=1.0))
        assert isinstance(out, ExecOutput)
        for c in out.chunks:
            seqs.append(c.seq)
            data += c.data
            after = c.seq
        if out.exit_status is not None:
            return seqs, data, out.exit_status


async def test_a_cron_job_outlives_a_killed_runner_to_one_exit_status(tmp_path: Path) -> None:
    make_image_root(tmp_path / "image", {"README": "job"})
    first = subprocess.Popen(
        [sys.executable, "-c", FIRST_RUNNER, str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert first.stdout is not None
        said = json.loads(await asyncio.to_thread(first.stdout.readline))
        first.kill()  # SIGKILL: nothing of the runner's clean-up runs
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert alive(said["pid"])  # the job runs on under its shim

    root = tmp_path / "data" / "runner" / "session-shims"
    found = await shimsession.discover(root)
    assert [r.session for r, _ in found] == ["cron-1"]
    units = {str(r.extra["unit"]) for r, _ in found}
    rpc, sessions, images = runner(tmp_path, make_tenancy(tmp_path, keep=units))
    task = asyncio.create_task(sessions.run())
    try:
        await rpc.adopt(found)
        assert images.pins == {DIGEST_A: 1}  # pinned again while it runs
        # The lease holder repeats its start: the adopted session, not a second run.
        assert isinstance(await rpc.start(JOB_START), Ok)
        # Fencing outlived the runner too: an older token is refused.
        late = RunStart(session="cron-2", assignment=JOB_START.assignment, command="true", fence=4)
        assert isinstance(await rpc.start(late), Error)
        assert sessions.sessions["cron-1"].pid == said["pid"]
        data_dir = rpc.layout.data_directory("demo")
        await asyncio.sleep(0.3)  # it keeps counting while we look
        (data_dir / "go").write_text("")
        seqs, data, status = await drain(sessions, "cron-1", after=said["seq"])
        assert status == 7
        # Carried on from the controller's last number: no gap, nothing twice.
        assert seqs == list(range(said["seq"] + 1, said["seq"] + 1 + len(seqs)))
        lines = said["seen"] + data.decode().splitlines()
        ticks = [int(line.split()[1]) for line in lines if line.startswith("tick")]
        assert ticks == list(range(len(ticks))) and lines[-1] == "done"
        assert (data_dir / "starts").read_text() == "started\n"  # one run
        assert isinstance(await sessions.handle(ExecClose(session="cron-1")), Ok)
        await eventually(lambda: not sessions.sessions and not list(root.iterdir()))
        assert images.pins == {DIGEST_A: 0}  # its clean-up ran once, here
    finally:
        sessions.shutdown()
        await asyncio.wait_for(task, 20)


async def test_a_terminal_session_carries_on_across_a_hand_over(tmp_path: Path) -> None:
    make_image_root(tmp_path / "image", {"README": "run"})
    rpc, sessions, _ = runner(tmp_path, Tenancy("unconfined", enabled=False))
    task = asyncio.create_task(sessions.run())
    start = RunStart(
        session="run-1",
        assignment=assignment("run-1", process_type="run"),
        command="read a; echo got $a; stty size; read b; echo got $b; exit 3",
        pty=True,
        rows=30,
        cols=100,
    )
    assert isinstance(await rpc.start(start), Ok)
    await sessions.handle(ExecInput(session="run-1", offset=0, data=b"one\n"))
    out = b""
    after = 0
    while b"got one" not in out or b"30 100" not in out:
        reply = await sessions.handle(ExecPoll(session="run-1", after=after, wait_s=1.0))
        assert isinstance(reply, ExecOutput)
        out += b"".join(c.data for c in reply.chunks)
        after = max([after, *(c.seq for c in reply.chunks)])
    pid = sessions.sessions["run-1"].pid
    held = sessions.sessions["run-1"].held
    assert isinstance(held, shimsession.ShimHeld) and held.popen is not None
    shim = held.popen  # our child: its successor cannot reap it (roost up would)
    sessions.shutdown(hand_over=True)  # SIGUSR2
    await asyncio.wait_for(task, 20)
    assert alive(pid)

    found = await shimsession.discover(rpc.layout.root / "session-shims")
    rpc, sessions, _ = runner(tmp_path, Tenancy("unconfined", enabled=False))
    task = asyncio.create_task(sessions.run())
    try:
        await rpc.adopt(found)
        assert sessions.sessions["run-1"].pid == pid
        # The gateway resends what it is not sure of: taken once.
        await sessions.handle(ExecInput(session="run-1", offset=0, data=b"one\ntwo\n"))
        await sessions.handle(ExecResize(session="run-1", rows=40, cols=120))
        seqs, data, status = await drain(sessions, "run-1", after)
        assert status == 3
        assert seqs and seqs[0] == after + 1
        assert b"got two" in data and b"got one" not in data
    finally:
        sessions.shutdown()
        await asyncio.wait_for(task, 20)
        await asyncio.to_thread(shim.wait, 20)
