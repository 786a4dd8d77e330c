"""A netns cluster whose hosts can be replaced one at a time, as `roost
cluster upgrade --replace` asks (tests/cluster/test_upgrade.py).

Every host runs Roost from its own symbolic link (BASE/code/ADDRESS, on its
daemons' PYTHONPATH), pointing at the sources of the release it runs, as
bench/restart.py does for one host. A router host runs its router under
tests.cluster.routerkeeper, which holds the listening socket as a systemd
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
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.cluster.cluster import ROUTER_PORT, RoostCluster
from tests.cluster.harness import Host, _tool
from tests.conftest import REPO

HANDS_OVER = ("runner", "servicehost")


class UpgradableCluster(RoostCluster):
    """A RoostCluster whose daemons run from per-host code links, starting at `src`."""

    def __init__(self, base: Path, src: Path, **kw: Any) -> None:
        super().__init__(base, **kw)
        self.src = src
        self.code = base / "code"
        self.state_file = base / "upgrade-hosts.json"

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
        if self.role_of(host) == "router":
            keeper = [sys.executable, "-m", "tests.cluster.routerkeeper", host.ip]
            argv = [*keeper, str(ROUTER_PORT), str(self.pidfile(host)), "--", *argv]
        proc = self.net.spawn(host, argv, self.env_for(host.ip), log, cwd=REPO)
        if self.role_of(host) != "router":
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
                "env": self.env_for(h.ip),
                "link": str(self.link(h.ip)),
                "pidfile": str(self.pidfile(h)),
                "keeper": h.procs[0].pid if self.role_of(h) == "router" and h.procs else 0,
                "log": str(self.base / "logs" / f"{h.name}.log"),
            }
            for h in self.net.hosts.values()
        }
        state = {"target": str(target or self.src), "hosts": hosts}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_file)

    def replace_command(self, broken: str = "") -> str:
        """`roost cluster upgrade --replace`'s command (with --broken for the host at `broken`)."""
        cmd = f"{sys.executable} -m tests.cluster.upgrade_hosts {self.state_file} {{host}}"
        if broken:
            cmd = f'if [ "{{host}}" = {broken} ]; then {cmd} --broken; else {cmd}; fi'
        return cmd


def gone(pid: int) -> bool:
    """Exited (a zombie its parent, the test, has not reaped yet counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_gone(pid: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            raise SystemExit(f"pid {pid} still runs {timeout:.0f} s after its signal")
        time.sleep(0.05)


def replace(state: dict[str, Any], address: str, broken: bool) -> None:
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
    pidfile.write_text(f"{proc.pid}\n")


def main(args: list[str]) -> None:
    state_file, address = Path(args[0]), args[1]
    replace(json.loads(state_file.read_text()), address, "--broken" in args[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
