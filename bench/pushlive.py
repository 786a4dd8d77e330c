"""Push to live: a one-line change's `git push` until the new release answers.

Issue 19's second deploy figure. On one `roost up` (tests/e2e/platform.py's
harness), the hello example app is pushed once (untimed: its dependency
layer is built then), then for each repetition a one-line change is
committed and timed from the start of `git push` (over the gateway's SSH) to
the first answer through the router that carries the change. Beside it, in
the same run, the bare steps a host without Roost would take for the same
app: `uv venv` plus `uv pip sync --offline` of the same lock (flask and
gunicorn, from uv's warm cache) into a fresh directory, then gunicorn
started until its first 200. The pushes start once the platform is idle
(its start's one-off work, backupd's first backup and drill, done).
Medians of each; it prints `push_to_live_s` and `push_to_live_vs_bare`
(targets: <= 1 s, <= 1.5). Needs root (the platform's sandboxes) and PyPI
for the first lock.

Run alone (`python bench/pushlive.py [--quick]`) or from bench/deploy.py.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import wait_until  # noqa: E402
from tests.e2e.platform import Platform, running_platform  # noqa: E402
from tests.sshclient import git_env  # noqa: E402

APP = "pushlive"
POLL_S = 0.005
# A daemon's log line (roost.daemonize): its local time to the millisecond.
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+)\[\d+\] \w+ [\w.]+: (.*)$")


@dataclass(frozen=True)
class PushFigures:
    push_s: list[float]
    bare_s: list[float]

    @property
    def push_to_live_s(self) -> float:
        return statistics.median(self.push_s)

    @property
    def vs_bare(self) -> float:
        return self.push_to_live_s / statistics.median(self.bare_s)

    def lines(self) -> list[str]:
        return [
            f"push_to_live_s {self.push_to_live_s:.3f}",
            f"push_to_live_vs_bare {self.vs_bare:.2f}",
        ]


def _answers(url: str, headers: dict[str, str], body: str) -> bool:
    try:
        r = httpx.get(url, headers=headers, timeout=2)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and body in r.text


class PushedApp:
    """The hello app in a git checkout, pushed to the platform's gateway."""

    def __init__(self, platform: Platform, work: Path) -> None:
        self.platform = platform
        self.key = work / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True
        )
        platform.roost("keys", "add", str(self.key.with_suffix(".pub")))
        self.timeline: list[tuple[float, str]] = []
        self.began_wall = 0.0  # time.time() as the last push began
        self.src = work / APP
        shutil.copytree(REPO / "examples" / "hello", self.src)
        self.git(["init", "-q", "-b", "main"])
        platform.roost("apps", "create", APP)
        self.change("first")

    def git(self, args: list[str]) -> None:
        ident = ["-c", "user.name=bench", "-c", "user.email=bench@example.com"]
        subprocess.run(["git", *ident, "-C", str(self.src), *args], check=True)

    def change(self, greeting: str) -> None:
        """Commit a one-line change: the greeting the app answers with."""
        app = self.src / "app.py"
        lines = app.read_text().splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if line.startswith("GREETING = "))
        lines[at] = f'GREETING = "{greeting}"\n'
        app.write_text("".join(lines))
        self.git(["add", "-A"])
        self.git(["commit", "-qm", greeting])

    def push(self) -> list[tuple[float, str]]:
        """Push; the gateway's lines as they came, each with its time since the start."""
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            ["git", "push", "--progress", f"vcs@127.0.0.1:{APP}", "main"],
            cwd=self.src,
            env=git_env(self.platform.ssh_port, self.key),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        lines = [(time.perf_counter() - t0, line.rstrip()) for line in proc.stderr]
        code = proc.wait(timeout=600)
        said = "\n".join(line for _, line in lines)
        if code != 0 or " is live" not in said:
            raise RuntimeError(f"git push failed ({code}):\n{said}")
        return lines

    def push_until_live(self, greeting: str) -> float:
        self.change(greeting)
        url = f"http://127.0.0.1:{self.platform.router_port}/"
        headers = {"Host": f"{APP}.localhost"}
        t0 = time.perf_counter()
        self.began_wall = time.time()
        self.timeline = self.push()
        wait_until(lambda: _answers(url, headers, greeting), 60, "the pushed release", POLL_S)
        took = time.perf_counter() - t0
        self.timeline.append((took, "answers through the router"))
        return took


class Bare:
    """The same app the plain way: a venv from a lock, and gunicorn."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
        reqs = work / "requirements.in"
        reqs.write_text("flask>=3.0\ngunicorn\n")
        self.lock = work / "requirements.lock"
        subprocess.run(
            [self.uv, "pip", "compile", "-q", "-o", str(self.lock), str(reqs)], check=True
        )
        self.app = REPO / "examples" / "hello"
        self.n = 0
        self.run()  # fills uv's cache, so every timed run is offline and warm

    def run(self) -> float:
        self.n += 1
        venv = self.work / f"venv{self.n}"
        py = venv / "bin" / "python"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        t0 = time.perf_counter()
        subprocess.run([self.uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
        subprocess.run(
            [self.uv, "pip", "sync", "-q", "--offline", "--python", str(py), str(self.lock)],
            check=True,
        )
        proc = subprocess.Popen(
            [str(venv / "bin" / "gunicorn"), "-b", f"127.0.0.1:{port}", "app:app"],
            cwd=self.app,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_until(lambda: _answers(url, {}, "Hello"), 60, "bare gunicorn", POLL_S)
            took = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(venv)
        return took


def daemon_lines(log: Path, since: float, until: float) -> list[tuple[float, str]]:
    """The daemons' own log lines (roost up's output) logged from `since` to
    `until` (time.time()), each with its time since `since`: what the runner,
    builder and controller did meanwhile, which the push's output batches."""
    found: list[tuple[float, str]] = []
    for line in log.read_text(errors="replace").splitlines():
        m = LOG_LINE.match(line)
        if m is None or "asyncssh" in line:
            continue
        at = dt.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if since <= at <= until:
            found.append((at - since, f"{m[2]}: {m[3][:110]}"))
    return found


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by process `pid` and everything under it."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return total
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def settle(platform: Platform, busy: float = 0.1, limit_s: float = 180.0) -> float:
    """Wait until the platform is idle (its process tree under `busy` of a
    core for two seconds running): its start's one-off work (backupd's first
    base backup and its drill, the first push's layer) is not what a push
    costs. Returns the seconds waited."""
    assert platform.proc is not None
    began = time.monotonic()
    calm = 0
    last = tree_cpu_s(platform.proc.pid)
    while calm < 2 and time.monotonic() - began < limit_s:
        time.sleep(1.0)
        now = tree_cpu_s(platform.proc.pid)
        calm = calm + 1 if now - last < busy else 0
        last = now
    return time.monotonic() - began


def measure(platform: Platform, work: Path, reps: int) -> PushFigures:
    """Alternate the two, so drift in the machine's load hits both alike."""
    work = work / "pushlive"
    work.mkdir()
    work.chmod(0o755)
    app = PushedApp(platform, work)
    app.push()
    bare = Bare(work)
    waited = settle(platform)
    print(f"  the platform was idle after {waited:.0f} s", flush=True)
    push_s: list[float] = []
    bare_s: list[float] = []
    slowest: list[tuple[float, str]] = []
    daemons: list[tuple[float, str]] = []
    for i in range(reps):
        push_s.append(app.push_until_live(f"change {i}"))
        if push_s[-1] >= max(push_s):
            slowest = app.timeline
            daemons = daemon_lines(platform.log, app.began_wall, app.began_wall + push_s[-1])
        bare_s.append(bare.run())
        print(f"  rep {i}: push {push_s[-1]:.3f} s, bare {bare_s[-1]:.3f} s", flush=True)
    print("  where the slowest push's time went (seconds since git push began):")
    for at, line in slowest:
        if line.startswith("remote: -----> ") or not line.startswith("remote:"):
            print(f"    {at:6.2f}  {line.removeprefix('remote: ').strip()}")
    print("  and what the daemons logged meanwhile:")
    for at, line in daemons:
        print(f"    {at:6.3f}  {line}")
    return PushFigures(push_s, bare_s)


def push_to_live(platform: Platform, work: Path, quick: bool) -> dict[str, float]:
    """bench/deploy.py's measurement (2)."""
    figures = measure(platform, work, 3 if quick else 7)
    return {"push_to_live_s": figures.push_to_live_s, "push_to_live_vs_bare": figures.vs_bare}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 repetitions instead of 7")
    args = ap.parse_args()
    reps = 3 if args.quick else 7
    with tempfile.TemporaryDirectory() as tmp, running_platform() as platform:
        figures = measure(platform, Path(tmp), reps)
    for line in figures.lines():
        print(line)


if __name__ == "__main__":
    main()
