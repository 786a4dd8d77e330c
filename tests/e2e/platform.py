"""A real `roost up` for end-to-end tests: start, stop, drive the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from roost.controller.admintoken import read_admin_token
from roost.proc import upstate
from tests.conftest import free_port, processes_under, wait_until
from tests.tmpfs import tmpfs_dir


@dataclass
class Platform:
    data: Path
    api_port: int
    router_port: int
    log: Path
    tls_port: int = field(default_factory=free_port)
    ssh_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    # Settings for the platform's daemons beyond the test process's own.
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    *self.command(),
                    "up",
                    "--api-port",
                    str(self.api_port),
                    "--router-port",
                    str(self.router_port),
                    "--tls-port",
                    str(self.tls_port),
                    "--ssh-port",
                    str(self.ssh_port),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **self.env},
            )
        self.wait_ready()

    def wait_ready(self, timeout: float = 180) -> None:
        """Until `roost up` says every role serves (`roost status --wait`), as
        users and scripts/demo wait; fail at once should `roost up` stop."""
        assert self.proc is not None
        waiter = subprocess.Popen(
            # --pid: this roost up's status, not the one it may be taking over from.
            [
                *self.command(),
                "status",
                "--wait",
                "--timeout",
                str(timeout),
                "--pid",
                str(self.proc.pid),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_until(
                lambda: (
                    waiter.poll() is not None or self.proc is None or self.proc.poll() is not None
                ),
                timeout + 10,
                "roost status --wait",
            )
        finally:
            if waiter.poll() is None:
                waiter.kill()
            out = waiter.communicate()[0]
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"roost up exited with {self.proc.returncode}")
        assert waiter.returncode == 0, f"the platform is not ready:\n{out}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "roost", "--data", str(self.data)]

    def stop(self) -> None:
        """SIGTERM `roost up`; every process of the platform must be gone after."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        remaining = processes_under(self.data)
        assert not remaining, f"processes left behind: {[q.cmdline() for q in remaining]}"

    def roost(
        self, *args: str, cwd: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("ROOST_API", "ROOST_TOKEN")}
        r = subprocess.run(
            [*self.command(), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"roost {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
            )
        return r

    @property
    def token(self) -> str:
        """The admin's API token, which the controller wrote at its start."""
        return read_admin_token(self.data)

    def get(self, app: str, path: str = "/") -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{self.router_port}{path}",
            headers={"Host": f"{app}.localhost"},
            timeout=10,
        )

    def role_pid(self, role: str) -> int:
        """The pid of `role`'s daemon while `roost up` says it is up, else 0."""
        loaded = upstate.load(self.data)
        status = loaded[0].roles.get(role) if loaded is not None else None
        return status.pid if status is not None and status.state == "up" else 0

    def ps(self, app: str) -> list[dict[str, object]]:
        return json.loads(self.roost("ps", "--app", app, "--json").stdout)  # type: ignore[no-any-return]


@contextmanager
def running_platform(
    env: dict[str, str] | None = None, tmpfs: bool = True, router_port: int | None = None
) -> Iterator[Platform]:
    """Start a platform in a fresh world-searchable data directory; stop it after.
    `tmpfs`: that directory on a tmpfs of its own (tests/tmpfs.py), unless
    False: PostgreSQL's initdb, the state database's and the image stores'
    fsyncs and the removal at the end waited behind the other workers'
    writes on the shared disk (test_notify 43.0 and 65.4 s on disk, 31.1
    and 27.9 s on a tmpfs, interleaved, the same CPU); `router_port`: the
    router's HTTP port, when something must know it before the start (an
    ACME server validating there).

    backupd backs up only when asked (ROOST_BACKUP_SCHEDULE=off) unless `env`
    says otherwise: on its schedule it takes and proves a base backup and a
    snapshot of the platform right after the start, a third of the CPU of a
    platform that deploys one app (test_notify 21.4 -> 14.5 s), for tests
    that look at none of it; the backup tests capture what they check."""
    with contextlib.ExitStack() as stack:
        if tmpfs:
            base = stack.enter_context(tmpfs_dir("roost-e2e-"))
        else:
            # The builder runs untrusted steps as an unprivileged user, which must be
            # able to reach the data directory: pytest's own tmp dirs are root-only.
            base = Path(tempfile.mkdtemp(prefix="roost-e2e-"))
            base.chmod(0o755)
            stack.callback(shutil.rmtree, base, ignore_errors=True)
        p = Platform(
            base / "data",
            free_port(),
            router_port or free_port(),
            base / "up.log",
            env={"ROOST_BACKUP_SCHEDULE": "off", **(env or {})},
        )
        try:
            p.start()
            yield p
        finally:
            try:
                p.stop()
            finally:
                print(p.log.read_text()[-5000:])
