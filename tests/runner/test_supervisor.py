"""The supervisor with real child processes (tiny Python scripts as instances)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import msgspec
import psutil
import pytest

from roost.appspec.model import AppSpec, HealthCheck, ProcessSpec
from roost.runner.heartbeat import instance_status
from roost.runner.layout import Layout
from roost.runner.model import Policy
from roost.runner.shimclient import Child
from roost.runner.supervisor import Supervisor
from roost.wire.messages import LogLine
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

FAST = Policy(
    backoff_base_s=0.05,
    backoff_max_s=0.4,
    backoff_reset_s=30.0,
    settle_s=0.3,
    startup_timeout_s=20.0,
    stop_grace_s=1.0,
)

SERVER = """
import http.server, os, pathlib
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/write":
            pathlib.Path("../data/written.txt").write_text(os.environ["ROOST_PROCESS"])
            pathlib.Path("media/linked.txt").write_text("via the symlink")
        from bundle_config import config
        app_id = config["core"]["app_id"]
        words = [os.environ["ROOST_PROCESS"], os.environ.get("GREETING", "-"), app_id]
        body = " ".join(words).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        print("request", self.path, flush=True)
print("listening on", os.environ["PORT"], flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""

# Serves 200 until its data directory holds "sick", then 500.
FLAKY = """
import http.server, os, pathlib
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        sick = pathlib.Path("../data/sick").exists()
        self.send_response(500 if sick else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""

CRASHER = """
import sys
print("starting up")
print("boom: cannot connect to the database", file=sys.stderr)
sys.exit(3)
"""

# Ignores SIGTERM, as does the child it starts: only SIGKILL ends them.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
print("pids", child.pid, flush=True)
time.sleep(300)
"""

# Leaves a background process behind and exits.
ORPHANER = """
import subprocess, time
child = subprocess.Popen(["sleep", "300"])
print("orphan", child.pid, flush=True)
time.sleep(1.0)
raise SystemExit(1)
"""

NOISY = """
import sys, time
sys.stdout.write("x" * 100000)
sys.stdout.write("\\n")
for i in range(20000):
    print("line", i)
sys.stdout.flush()
time.sleep(300)
"""


@dataclass
class Harness:
    sup: Supervisor
    images: FakeImages
    layout: Layout
    logs: list[LogLine]

    def app_lines(self, iid: str) -> list[str]:
        return [x.line for x in self.logs if x.source == "app" and x.instance_id == iid]

    def platform_lines(self) -> list[str]:
        return [x.line for x in self.logs if x.source == "platform"]


@contextlib.asynccontextmanager
async def harness(
    tmp_path: Path, policy: Policy = FAST, fail: dict[str, int] | None = None
) -> AsyncIterator[Harness]:
    layout = Layout(tmp_path / "data")
    layout.create()
    root = make_image_root(
        tmp_path / "image",
        {
            "server.py": SERVER,
            "crasher.py": CRASHER,
            "stubborn.py": STUBBORN,
            "orphaner.py": ORPHANER,
            "noisy.py": NOISY,
            "flaky.py": FLAKY,
        },
    )
    images = FakeImages({DIGEST_A: root}, fail=fail)
    logs: list[LogLine] = []
    tenancy = make_tenancy(tmp_path)
    sup = Supervisor(
        layout=layout,
        images=images,
        policy=policy,
        emit=logs.append,
        tenancy=tenancy,
    )
    task = asyncio.create_task(sup.run())
    try:
        yield Harness(sup, images, layout, logs)
    finally:
        sup.shutdown()
        await asyncio.wait_for(task, 30)
        tenancy.close()
    assert all(n == 0 for n in images.pins.values()), images.pins


def state(h: Harness, iid: str) -> str:
    rec = h.sup.records.get(iid)
    return rec.state if rec else "absent"


async def test_web_instance_starts_answers_and_stops(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        spec = msgspec.structs.replace(
            command_spec("python server.py"), symlinks={"media": "%(data_directory)s/media"}
        )
        a = assignment("i1", spec=spec, env={"GREETING": "hi"})
        (h.layout.data_directory("demo") / "media").mkdir(parents=True)
        h.sup.set_desired([a])
        await eventually(lambda: state(h, "i1") == "up", what="instance up")
        rec = h.sup.records["i1"]
        assert rec.port > 0 and rec.pid > 0 and rec.process_name == "web.1"
        assert rec.unix_socket.endswith(".sock")
        assert h.images.pins == {DIGEST_A: 1}
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{rec.port}/write")
        # Config vars reach the environment; bundle_config is importable.
        assert r.text == "web.1 hi demo"
        # `../data` from the checkout is the app's persistent data directory,
        # and the app's symlinks into it are in place.
        data = h.layout.data_directory("demo")
        assert (data / "written.txt").read_text() == "web.1"
        assert (data / "media" / "linked.txt").read_text() == "via the symlink"
        bundle = h.layout.bundle_dir("demo", "i1")
        assert (bundle / "bundle_config.py").exists()
        await eventually(lambda: "request /write" in h.app_lines("i1"), what="access log line")
        assert any(line.startswith("listening on") for line in h.app_lines("i1"))
        assert any(line.startswith("starting web.1 (release 1)") for line in h.platform_lines())

        h.sup.set_desired([])
        await eventually(lambda: "i1" not in h.sup.records, what="instance forgotten")
        assert not alive(rec.pid)
        assert rec.port not in h.sup._ports.in_use
        assert "web.1 stopped" in h.platform_lines()
        assert not bundle.exists()
        assert h.images.pins == {DIGEST_A: 0}


async def test_a_releases_instances_start_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each start waits for its shim (~50 ms, more on a busy host): the starts
    of one plan run at once. Here each launch first waits until the other
    has begun, so starts made one after another would never get past the
    first (it would wait for ever)."""
    real = Child.start.__func__  # type: ignore[attr-defined]
    begun: list[str] = []
    both = asyncio.Event()

    async def start(cls: type[Child], directory: Path, *args: object) -> Child:
        begun.append(directory.name)
        if len(begun) == 2:
            both.set()
        await both.wait()
        return await real(cls, directory, *args)  # type: ignore[no-any-return]

    monkeypatch.setattr(Child, "start", classmethod(start))
    async with harness(tmp_path) as h:
        spec = command_spec("python server.py")
        h.sup.set_desired([assignment("i1", spec=spec), assignment("i2", spec=spec)])
        await eventually(lambda: state(h, "i1") == state(h, "i2") == "up", what="both instances up")
        assert sorted(begun) == ["i1", "i2"]


async def test_changed_assignment_restarts_the_process(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        spec = command_spec("python server.py")
        h.sup.set_desired([assignment("i1", spec=spec, env={"GREETING": "one"})])
        await eventually(lambda: state(h, "i1") == "up", what="instance up")
        first = h.sup.records["i1"]
        h.sup.set_desired([assignment("i1", spec=spec, env={"GREETING": "two"})])
        await eventually(
            lambda: state(h, "i1") == "up" and h.sup.records["i1"].pid != first.pid, what="restart"
        )
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{h.sup.records['i1'].port}/")
        assert r.text == "web.1 two demo"
        assert not alive(first.pid)


async def test_crash_restarts_with_backoff_and_reports_stderr(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        h.sup.set_desired([assignment("c1", spec=command_spec("python crasher.py"))])
        await eventually(
            lambda: (r := h.sup.records.get("c1")) and r.restarts >= 5, what="5 restarts"
        )
        rec = h.sup.records["c1"]
        assert rec.failures >= 3  # consecutive failures drive the backoff
        assert rec.last_error.startswith("exited with code 3")
        assert "boom: cannot connect to the database" in rec.last_error
        crashes = [x for x in h.platform_lines() if "exited with code 3; restarting in" in x]
        # Exponential backoff, capped at backoff_max_s.
        assert crashes[:5] == [
            f"web.1 exited with code 3; restarting in {d}s"
            for d in ("0.05", "0.1", "0.2", "0.4", "0.4")
        ]
        assert any(x.startswith("restarting web.1") for x in h.platform_lines())


async def test_stop_escalates_to_sigkill_and_leaves_no_orphans(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        spec = command_spec("python stubborn.py", web=False, name="worker")
        h.sup.set_desired([assignment("s1", process_type="worker", spec=spec)])
        await eventually(lambda: state(h, "s1") == "up", what="worker up")
        pid = h.sup.records["s1"].pid
        await eventually(
            lambda: [x for x in h.app_lines("s1") if x.startswith("pids")], what="child pid"
        )
        # Host pids of everything the instance runs (its own pids are those
        # of its PID namespace): the sandbox, the script and its child.
        tree = [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
        assert len(tree) >= 4 and all(alive(p) for p in tree)
        h.sup.set_desired([])
        await eventually(lambda: state(h, "s1") == "stopping", what="stopping")
        await eventually(lambda: "s1" not in h.sup.records, what="forgotten")
        assert "worker.1 did not stop within 1s: killing it" in h.platform_lines()
        assert not any(alive(p) for p in tree)


async def test_exit_kills_what_the_instance_left_behind(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        spec = command_spec("python orphaner.py", web=False, name="worker")
        h.sup.set_desired([assignment("o1", process_type="worker", spec=spec)])
        rec = h.sup.records
        pid = await eventually(lambda: "o1" in rec and rec["o1"].pid, what="started")
        assert isinstance(pid, int)
        await eventually(
            lambda: [x for x in h.app_lines("o1") if x.startswith("orphan")], what="orphan pid"
        )
        sleepers = [
            p.pid for p in psutil.Process(pid).children(recursive=True) if p.name() == "sleep"
        ]
        assert sleepers
        await eventually(lambda: h.sup.records["o1"].restarts >= 1, what="a crash and restart")
        await eventually(lambda: not any(alive(p) for p in sleepers), what="orphan killed")


async def test_web_instance_that_never_answers_is_failed(tmp_path: Path) -> None:
    policy = Policy(backoff_base_s=5.0, startup_timeout_s=0.5, stop_grace_s=1.0)
    async with harness(tmp_path, policy) as h:
        h.sup.set_desired([assignment("q1", spec=command_spec("sleep 300"))])
        await eventually(lambda: state(h, "q1") == "crashed", what="startup failure")
        rec = h.sup.records["q1"]
        assert rec.last_error.startswith(f"did not answer HTTP on port {rec.port} within 0.5s")
        assert rec.failures == 1


async def test_declared_health_check_decides_up_or_failed(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        check = HealthCheck(path="/up", content="hi", timeout=5.0, attempts=2, interval=0.05)
        spec = msgspec.structs.replace(
            command_spec("python server.py"), healthchecks={"web": check}
        )
        h.sup.set_desired([assignment("h1", spec=spec, env={"GREETING": "hi"})])
        await eventually(lambda: state(h, "h1") == "up", what="passed its check")
        assert not h.sup.records["h1"].unhealthy
        # The same server, its body lacking what the check asks for: failed as
        # a crash whose error is the check's last answer.
        h.sup.set_desired([assignment("h2", spec=spec, env={"GREETING": "bye"})])
        await eventually(lambda: state(h, "h2") == "crashed", what="failed its check")
        rec = h.sup.records["h2"]
        assert rec.unhealthy and rec.failures == 1
        assert rec.last_error.startswith(
            "GET /up answered 200 without 'hi' in its body after 2 attempts (expected 200-399)"
        )
        assert instance_status(rec, 0.0).unhealthy


async def test_a_declared_check_keeps_running_and_a_failing_one_restarts_the_instance(
    tmp_path: Path,
) -> None:
    """Up, the instance's declared check is tried every health_every_s; once
    it fails `attempts` times in a row the instance is stopped as a crash,
    reported unhealthy (what the controller's rollback window watches), and
    restarted; healthy again, it comes back up."""
    # A backoff long enough to look at the failed run before its restart
    # (which starts a fresh run, healthy until it fails again).
    policy = replace(FAST, health_every_s=0.1, backoff_base_s=2.0, backoff_max_s=2.0)
    async with harness(tmp_path, policy) as h:
        check = HealthCheck(path="/up", timeout=2.0, attempts=3, interval=0.05)
        spec = msgspec.structs.replace(command_spec("python flaky.py"), healthchecks={"web": check})
        h.sup.set_desired([assignment("f1", spec=spec)])
        await eventually(lambda: state(h, "f1") == "up", what="up")
        first = h.sup.records["f1"].pid
        sick = h.layout.data_directory("demo") / "sick"
        sick.write_text("")
        # Stopped (TERM through its shim), then its exit reported: a crash.
        await eventually(
            lambda: h.sup.records["f1"].unhealthy and state(h, "f1") == "backoff",
            what="failed while running",
        )
        rec = h.sup.records["f1"]
        assert rec.last_error.startswith("GET /up answered 500 after 3 attempts"), rec.last_error
        assert instance_status(rec, 0.0).unhealthy
        sick.unlink()
        await eventually(
            lambda: state(h, "f1") == "up" and h.sup.records["f1"].pid != first, what="back up"
        )
        assert not instance_status(h.sup.records["f1"], 0.0).unhealthy


async def test_image_fetch_failures_are_retried(tmp_path: Path) -> None:
    async with harness(tmp_path, fail={DIGEST_A: 2}) as h:
        spec = command_spec("sleep 300", web=False, name="worker")
        h.sup.set_desired([assignment("w1", process_type="worker", spec=spec)])
        await eventually(lambda: state(h, "w1") == "up", what="worker up")
        assert h.images.ensured == [DIGEST_A] * 3
        assert sum("could not fetch image" in x for x in h.platform_lines()) == 2


async def test_unknown_process_type_and_missing_program_are_crashes(tmp_path: Path) -> None:
    policy = Policy(backoff_base_s=5.0, stop_grace_s=1.0)
    async with harness(tmp_path, policy) as h:
        web = ProcessSpec(
            name="web", kind="command", command="sleep 1", web=True, cwd="no/such/dir"
        )
        spec = AppSpec(processes={"web": web})
        h.sup.set_desired([assignment("u1", process_type="clock"), assignment("u2", spec=spec)])
        await eventually(
            lambda: state(h, "u1") == "crashed" and state(h, "u2") == "crashed", what="crashes"
        )
        assert h.sup.records["u1"].last_error == "release 1 has no process type 'clock'"
        assert h.sup.records["u2"].last_error.startswith(
            "could not start: working directory "
        ) and h.sup.records["u2"].last_error.endswith("no/such/dir does not exist")


async def test_noisy_output_never_blocks_and_long_lines_are_cut(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        spec = command_spec("python noisy.py", web=False, name="worker")
        h.sup.set_desired([assignment("n1", process_type="worker", spec=spec)])
        await eventually(lambda: "line 19999" in h.app_lines("n1"), what="all output")
        lines = h.app_lines("n1")
        assert [len(x) for x in lines[:7]] == [16384] * 6 + [100000 - 6 * 16384]
        assert lines[7] == "line 0"
        assert all(
            x.process == "worker.1" and x.stream == "stdout"
            for x in h.logs
            if x.instance_id == "n1" and x.source == "app"
        )


async def test_shutdown_stops_every_instance(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        spec = command_spec("sleep 300", web=False, name="worker")
        h.sup.set_desired([assignment(f"w{i}", process_type="worker", spec=spec) for i in range(3)])
        await eventually(lambda: all(state(h, f"w{i}") == "up" for i in range(3)), what="3 up")
        pids = [h.sup.records[f"w{i}"].pid for i in range(3)]
        assert sorted(r.process_name for r in h.sup.records.values()) == [
            "worker.1",
            "worker.2",
            "worker.3",
        ]
    assert not any(alive(pid) for pid in pids)


async def test_an_assignment_during_shutdown_does_not_restart_anything(tmp_path: Path) -> None:
    """Heartbeats keep running while the runner stops: a late assignment is ignored."""
    async with harness(tmp_path) as h:
        spec = command_spec("sleep 300", web=False, name="worker")
        h.sup.set_desired([assignment("w1", process_type="worker", spec=spec)])
        await eventually(lambda: state(h, "w1") == "up", what="w1 up")
        pid = h.sup.records["w1"].pid
        h.sup.shutdown()
        h.sup.set_desired([assignment("w1", process_type="worker", spec=spec)])
        await eventually(lambda: not h.sup.records, what="every instance stopped")
        assert not alive(pid)
