"""A netns cluster whose hosts can be replaced one at a time, as `roost
cluster upgrade --replace` asks (tests/cluster/test_upgrade.py).

Every host runs Roost from its own symbolic link (BASE/code/ADDRESS, on its
daemons' PYTHONPATH), pointing at the sources of the release it runs, as
bench/restart.py does for one host. A router host runs its router under
`roost router-keeper`, which holds the listening socket as a systemd
.socket unit would.

    python -m tests.cluster.upgrade_hosts STATE ADDRESS [--broken]

replaces one host the way a site's command would restart its units: the
link is pointed at STATE's target sources; a runner or a servicehost is
sent SIGUSR2 (its instances, PostgreSQL and Redis stay for the successor),
any other daemon TERM; once it has gone, the new daemon starts in the
host's namespace (a router: the keeper is sent SIGHUP, and starts the new
one on the held socket before the old one drains). --broken starts a
daemon that cannot start (an unknown option), as a broken release would.
It returns once the new daemon is started; whether it became healthy is
for `roost cluster upgrade` to find out.

(Release 0.1.0, whose daemons handed nothing over and whose router bound
its port itself, was upgraded from by this harness until 0.2.0 was tagged:
`roost cluster upgrade` still drains such a runner first, and
`roost router-keeper --take-over` still joins such a router's port,
tests/router/test_router_keeper.py.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from roost.cli.takeover import gone
from tests.cluster.cluster import ROUTER_PORT, RoostCluster, wait_for
from tests.cluster.harness import Host, _tool
from tests.conftest import REPO
from tests.e2e.load import Load

HANDS_OVER = ("runner", "servicehost")


class UpgradableCluster(RoostCluster):
    """A RoostCluster whose daemons run from per-host code links, starting at `src`."""

    def __init__(self, base: Path, src: Path, **kw: Any) -> None:
        super().__init__(base, **kw)
        self.src = src
        self.code = base / "code"
        self.state_file = base / "upgrade-hosts.json"
        self.target = src  # the sources a replaced host runs

    def link(self, address: str) -> Path:
        path = self.code / address
        if not path.is_symlink():
            self.code.mkdir(parents=True, exist_ok=True)
            path.symlink_to(self.src)
        return path

    def env_for(self, host_ip: str) -> dict[str, str]:
        return {**super().env_for(host_ip), "PYTHONPATH": str(self.link(host_ip))}

    def pidfile(self, host: Host) -> Path:
        return self.base / "pids" / f"{host.name}.pid"

    def argv(self, host: Host) -> list[str]:
        role = self.role_of(host)
        argv = [sys.executable, "-m", "roost", "--data", str(host.data), role]
        if role == "router":
            argv += ["--port", str(ROUTER_PORT)]
        return argv

    def start_daemons(self, host: Host) -> None:
        argv = self.argv(host)
        log = self.base / "logs" / f"{host.name}.log"
        self.pidfile(host).parent.mkdir(parents=True, exist_ok=True)
        keeper = self.role_of(host) == "router"  # on a socket its keeper holds
        env = self.env_for(host.ip)
        if keeper:
            argv = [*keeper_argv(host.data, host.ip, self.pidfile(host)), "--", *argv]
        proc = self.net.spawn(host, argv, env, log, cwd=REPO)
        if not keeper:
            self.pidfile(host).write_text(f"{proc.pid}\n")
        self.write_state()

    def health_of(self, host: Host) -> dict[str, Any]:
        """A controller's /api/health."""
        r = self._http.get(self.api_url(host) + "/api/health", timeout=5)
        r.raise_for_status()
        return dict(r.json())

    def daemon_pid(self, host: Host) -> int:
        return int(self.pidfile(host).read_text())

    def write_state(self, target: Path | None = None) -> None:
        """What a replacement needs of each host (the helper runs in another process)."""
        hosts = {
            h.ip: {
                "name": h.name,
                "ns": h.ns,
                "role": self.role_of(h),
                "argv": self.argv(h),
                "data": str(h.data),
                "env": self.env_for(h.ip),
                "link": str(self.link(h.ip)),
                "pidfile": str(self.pidfile(h)),
                "keeper": h.procs[0].pid if self.role_of(h) == "router" and h.procs else 0,
                "log": str(self.base / "logs" / f"{h.name}.log"),
            }
            for h in self.net.hosts.values()
        }
        state = {"target": str(target or self.target), "hosts": hosts}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_file)

    def upgrade(
        self, *args: str, replace: str = "", only: list[Host] | None = None
    ) -> tuple[int, str]:
        """`roost cluster upgrade` of the namespace hosts (or those `only`):
        (exit status, output)."""
        hosts = only if only is not None else list(self.net.hosts.values())
        r = self.cli(
            "cluster",
            "upgrade",
            "--replace",
            replace or self.replace_command(),
            "--router-port",
            str(ROUTER_PORT),
            # The namespace hosts: the root namespace's builder (and the tests'
            # own observer, a router no router runs on) are not replaced here.
            *(f"--host={h.ip}" for h in hosts),
            *args,
            check=False,
        )
        return r.returncode, r.stdout + r.stderr

    def load(self, app: str, keep_alive: int = 3, fresh: int = 2) -> Load:
        """Steady load on `app` through the first router (keep-alive and fresh clients)."""
        return Load(
            ROUTER_PORT,
            f"{app}.localhost",
            address=self.routers[0].ip,
            keep_alive=keep_alive,
            fresh=fresh,
            accept=lambda body: body.startswith("Hello"),
        )

    def daemon_pids(self) -> dict[str, int]:
        return {h.name: self.daemon_pid(h) for h in self.net.hosts.values()}

    def replace_command(self, broken: str = "") -> str:
        """`roost cluster upgrade --replace`'s command (with --broken for the host at `broken`)."""
        cmd = f"{sys.executable} -m tests.cluster.upgrade_hosts {self.state_file} {{host}}"
        if broken:
            cmd = f'if [ "{{host}}" = {broken} ]; then {cmd} --broken; else {cmd}; fi'
        return cmd


def keeper_argv(data: Path, address: str, pidfile: Path) -> list[str]:
    """`roost router-keeper` holding a router host's port (plain HTTP); `pidfile`: its router."""
    roost = [sys.executable, "-m", "roost", "--data", str(data), "router-keeper"]
    where = ["--host", address, "--port", str(ROUTER_PORT), "--tls-port", "0"]
    return [*roost, *where, "--pidfile", str(pidfile)]


def wait_gone(pid: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            raise SystemExit(f"pid {pid} still runs {timeout:.0f} s after its signal")
        time.sleep(0.05)


def version_at(link: Path) -> str:
    """The release of the sources `link` points at."""
    text = (link / "roost" / "__init__.py").read_text()
    return text.split("__version__ = ", 1)[1].split()[0].strip("\"'")


def spawn(info: dict[str, Any], argv: list[str]) -> int:
    """Start `argv` in the host's namespace, named as the host; its pid."""
    naming = [_tool("unshare"), "--uts", "/bin/sh", "-c", 'hostname "$0" && exec "$@"']
    full = [_tool("ip"), "netns", "exec", info["ns"], *naming, info["name"], *argv]
    with open(info["log"], "ab") as out:
        proc = subprocess.Popen(
            full,
            env=info["env"],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc.pid


def replace(state_file: Path, address: str, broken: bool) -> None:
    state = json.loads(state_file.read_text())
    info = state["hosts"][address]
    link = Path(info["link"])
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(state["target"])
    os.replace(tmp, link)
    pidfile = Path(info["pidfile"])
    old = int(pidfile.read_text())
    argv = [*info["argv"], "--no-such-option"] if broken else info["argv"]
    if info["role"] == "router" and not broken:
        os.kill(info["keeper"], signal.SIGHUP)
        deadline = time.monotonic() + 30
        while int(pidfile.read_text()) == old:
            if time.monotonic() > deadline:
                raise SystemExit("the router's keeper started no new router")
            time.sleep(0.05)
        return
    os.kill(old, signal.SIGUSR2 if info["role"] in HANDS_OVER else signal.SIGTERM)
    wait_gone(old)
    pidfile.write_text(f"{spawn(info, argv)}\n")


def main(args: list[str]) -> None:
    replace(Path(args[0]), args[1], "--broken" in args[2:])


if __name__ == "__main__":
    main(sys.argv[1:])


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """`rev`'s sources checked out in a git worktree, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="roost-release-"))
    tree = base / "tree"
    git = ["git", "-C", str(REPO)]
    subprocess.run([*git, "worktree", "add", "--detach", str(tree), rev], check=True)
    try:
        yield tree
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(tree)], check=True)
        shutil.rmtree(base, ignore_errors=True)


def web_up(c: RoostCluster, app: str) -> list[dict[str, Any]]:
    """The app's web instances that are up (its /ps rows)."""
    rows = c.api("GET", f"/api/apps/{app}/ps")
    return [i for i in rows if i["state"] == "up" and i["process_type"] == "web"]


@contextlib.contextmanager
def serving(c: UpgradableCluster, app: str, source: Path) -> Iterator[UpgradableCluster]:
    """`c` started, `app` deployed from `source` with its two web instances
    up; on leaving, `c` stopped, nothing left behind, its directory gone."""
    try:
        with c:
            c.deploy(app, source)
            wait_for(lambda: len(web_up(c, app)) == 2, 90, "the app's two web instances")
            yield c
        assert not c.net.leftovers(), f"left behind: {c.net.leftovers()}"
    finally:
        shutil.rmtree(c.base, ignore_errors=True)


class ReleaseCluster(UpgradableCluster):
    """An UpgradableCluster set up by a release's own code (`src`, e.g. a
    worktree of its tag): its `roost cluster init`/`join`, its CLI for
    deploys, its daemons (a router under that release's keeper). `upgrade`
    runs this tree's CLI."""

    def __init__(self, base: Path, src: Path, **kw: Any) -> None:
        super().__init__(base, src, **kw)
        self.cli_src = src  # the code `roost` commands run
        self.target = REPO / "src"

    def roost(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        env = {"PYTHONPATH": str(self.cli_src), **(env or {})}
        return super().roost(*args, env=env, check=check, timeout=timeout)

    def upgrade(
        self, *args: str, replace: str = "", only: list[Host] | None = None
    ) -> tuple[int, str]:
        """The same, by this tree's CLI."""
        self.cli_src = REPO / "src"
        try:
            return super().upgrade(*args, replace=replace, only=only)
        finally:
            self.cli_src = self.src
