"""scripts/demo stops everything it started: on TERM (sent to the script
alone, as `kill -TERM PID` does) whatever step it is in, and when a step fails.

Each test runs the real script on a platform of its own (its own data
directory and free ports; ROOST_SKIP_INSTALL=1: the suite's .venv is used as
it is) and checks that no process of it is left: not `roost up`, not a
daemon, not a step.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, free_port, processes_under, wait_until


@dataclass
class Demo:
    proc: subprocess.Popen[bytes]
    data: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float) -> None:
        def seen() -> bool:
            assert self.proc.poll() is None, f"demo exited early:\n{self.output()[-4000:]}"
            return text in self.output()

        wait_until(seen, timeout, f"{text!r} in the demo's output")

    def finish(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"demo did not end:\n{self.output()[-4000:]}") from None

    def left(self) -> list[psutil.Process]:
        """What the demo started that still runs: in its session, or naming its data."""
        found = {p.pid: p for p in processes_under(self.data)}
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == self.proc.pid:
                    found[p.pid] = p
            except (ProcessLookupError, PermissionError):
                continue
        return [p for p in found.values() if p.is_running() and p.status() != "zombie"]


def _kill(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


@pytest.fixture
def demo() -> Iterator[Callable[..., Demo]]:
    started: list[Demo] = []
    base = Path(tempfile.mkdtemp(prefix="roost-demo-"))
    base.chmod(0o755)  # the build and service users walk through it

    def start(**env: str) -> Demo:
        full = {k: v for k, v in os.environ.items() if k not in ("ROOST_API", "ROOST_TOKEN")}
        full.update(
            ROOST_DATA=str(base / "data"),
            ROOST_API_PORT=str(free_port()),
            ROOST_ROUTER_PORT=str(free_port()),
            ROOST_ROUTER_TLS_PORT=str(free_port()),
            ROOST_SSH_PORT=str(free_port()),
            ROOST_SKIP_INSTALL="1",
            **env,
        )
        log = base / "demo.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(REPO / "scripts" / "demo")],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full,
                cwd=base,
                # Its own session: what is left of it is found by session id.
                start_new_session=True,
            )
        d = Demo(proc, base / "data", log)
        started.append(d)
        return d

    try:
        yield start
    finally:
        for d in started:
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
            _kill(d.left())
            print(d.output()[-5000:])
        shutil.rmtree(base, ignore_errors=True)


def test_term_during_the_deploy_stops_everything(demo: Callable[..., Demo]) -> None:
    d = demo()
    # The deploy is the step in the foreground: its build has started.
    d.wait_for("\nbuild ", 300)
    d.proc.send_signal(signal.SIGTERM)
    assert d.finish() == 143
    assert d.left() == []
    assert "roost up: stopped" in d.output()


def test_term_once_live_stops_everything(demo: Callable[..., Demo]) -> None:
    d = demo()
    d.wait_for("press Ctrl-C to stop it", 600)
    assert "hello is live at" in d.output()
    d.proc.send_signal(signal.SIGTERM)
    assert d.finish() == 143
    assert d.left() == []


def test_a_failed_step_stops_everything(demo: Callable[..., Demo]) -> None:
    # A build cannot finish in a millisecond: the deploy fails, and with it the script.
    d = demo(ROOST_BUILD_TIMEOUT_S="0.001")
    code = d.finish(600)
    out = d.output()
    assert code != 0 and "deploy failed" in out, out[-4000:]
    assert d.left() == []
    assert "roost up: stopped" in out
