"""A cluster with backups: a servicehost, a backup host and an offsite SFTP host.

`BackupCluster` is a `RoostCluster` (one controller, one runner, one router,
the builder) plus svc1 (servicehost), bak1 (backupd) and off1: an OpenSSH
server in its own namespace that is nothing but the offsite location, as an
operator would set one up. Its only account is root, an SFTP store and no
more (`ForceCommand internal-sftp` in a chroot, public keys only, no
forwarding, no TTY), and the only key it accepts is backupd's. backupd is
told where it is (ROOST_BACKUP_OFFSITE=sftp:root@OFF1:/repo) and which host
key to expect (ROOST_BACKUP_OFFSITE_HOST_KEY), as `roost backupd` documents.

The chroot lives under /run, not /tmp: sshd refuses a chroot with a group-
or world-writable directory on its path, and /tmp is 1777.

Also here: what the tests read of the hosts from outside (the servicehost's
PostgreSQL as its superuser, from its own namespace; bak1's local restic
repository), and `probe` (python -m tests.cluster.backups_probe), which sends
backupd requests from inside a host with that host's own key.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from roost.backups.layout import Layout
from roost.backups.locations import ensure_ssh_key, local_location
from roost.backups.restic import Repo
from roost.servicehost.binaries import find_binaries
from tests.backups.sshd import SSHD, keygen
from tests.cluster.cluster import RoostCluster, wait_for
from tests.cluster.harness import Host, Network
from tests.conftest import REPO

OFFSITE_PATH = "/repo"


class Offsite:
    """sshd in `host`'s namespace, port 22, serving SFTP into a chroot."""

    def __init__(self, net: Network, host: Host) -> None:
        self.net = net
        self.host = host
        self.base = Path(tempfile.mkdtemp(prefix="roost-offsite-", dir="/run"))
        self.base.chmod(0o755)
        self.chroot = self.base / "chroot"
        self.authorized = self.base / "authorized_keys"
        self.host_key_pub = ""
        self.log = net.base / "logs" / f"{host.name}-sshd.log"

    @property
    def repository(self) -> str:
        return f"sftp:root@{self.host.ip}:{OFFSITE_PATH}"

    def authorize(self, public_key: str) -> None:
        """The one key that may log in (`restrict`: no pty, no forwarding)."""
        self.authorized.write_text(f"restrict {public_key}\n")
        self.authorized.chmod(0o600)

    def start(self) -> None:
        self.chroot.mkdir(mode=0o755)
        self.host_key_pub = keygen(self.base / "host_ed25519", "off1")
        self.authorized.touch(mode=0o600)
        options = {
            "Port": "22",
            "ListenAddress": self.host.ip,
            "HostKey": str(self.base / "host_ed25519"),
            "PidFile": "none",
            "AuthorizedKeysFile": str(self.authorized),
            "AuthenticationMethods": "publickey",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "UsePAM": "no",
            "PermitRootLogin": "prohibit-password",
            "AllowUsers": "root",
            # Whatever a client asks to run, it gets an SFTP server in the chroot.
            "ForceCommand": "internal-sftp",
            "Subsystem": "sftp internal-sftp",
            "ChrootDirectory": str(self.chroot),
            "AllowTcpForwarding": "no",
            "AllowStreamLocalForwarding": "no",
            "AllowAgentForwarding": "no",
            "PermitTunnel": "no",
            "X11Forwarding": "no",
            "PermitTTY": "no",
            "LogLevel": "VERBOSE",
        }
        config = self.base / "sshd_config"
        config.write_text("".join(f"{k} {v}\n" for k, v in options.items()))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        proc = self.net.spawn(
            self.host, [SSHD, "-D", "-e", "-f", str(config)], {"PATH": "/usr/bin:/bin"}, self.log
        )

        def listening() -> bool:
            assert proc.poll() is None, self.log.read_text()[-2000:]
            try:
                socket.create_connection((self.host.ip, 22), 0.5).close()
            except OSError:
                return False
            return True

        wait_for(listening, 20, "sshd on off1")

    def close(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


class BackupCluster(RoostCluster):
    def __init__(self, base: Path, backupds: int = 1, offsite: bool = True) -> None:
        # Only the backups a test asks for: the schedule's own would run beside them.
        super().__init__(
            base,
            controllers=1,
            runners=1,
            routers=1,
            servicehosts=1,
            backupds=backupds,
            env={"ROOST_BACKUP_SCHEDULE": "off"},
        )
        self.offsite: Offsite | None = None
        self.with_offsite = offsite  # off1, where bak1's key is authorised
        self.host_env: dict[str, dict[str, str]] = {}

    @property
    def svc(self) -> Host:
        return self.servicehosts[0]

    @property
    def bak(self) -> Host:
        return self.backupds[0]

    def start_all(self) -> None:
        if self.offsite is None and self.with_offsite:
            self._offsite()
        super().start_all()

    def _offsite(self) -> None:
        """off1 up, backupd's key authorised there, backupd told where it is."""
        off = Offsite(self.net, self.net.add_host("off1", 61))
        self.offsite = off
        off.start()
        # backupd's own key, made as backupd makes it at its first start
        # (roost.backups.locations), here before that start so that the
        # operator's step, authorising it offsite, comes first.
        off.authorize(asyncio.run(ensure_ssh_key(Layout(self.bak.data))))
        self.env_extra.update(
            ROOST_BACKUP_OFFSITE=off.repository,
            ROOST_BACKUP_OFFSITE_HOST_KEY=off.host_key_pub,
        )

    def env_for(self, host_ip: str) -> dict[str, str]:
        return {**super().env_for(host_ip), **self.host_env.get(host_ip, {})}

    def close(self) -> None:
        """Every process stopped, everything removed; each daemon's log printed
        first (kept under $ROOST_TEST_LOGS/backups when that is set)."""
        print(self.logs_tail())
        try:
            super().close()
        finally:
            if self.offsite is not None:
                self.offsite.close()
            keep = os.environ.get("ROOST_TEST_LOGS")
            if keep and (self.base / "logs").exists():
                shutil.copytree(self.base / "logs", Path(keep) / "backups", dirs_exist_ok=True)
            shutil.rmtree(self.base, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What of the cluster is still there after `close`."""
        dirs = [self.base] + ([self.offsite.base] if self.offsite is not None else [])
        return self.net.leftovers() + [str(d) for d in dirs if d.exists()]

    # ------------------------------------------------------------ waiting

    def backupd_answers(self) -> bool:
        self.api("GET", "/api/backups")
        return True

    def servicehost_up(self) -> bool:
        return any(
            s["state"] == "up" for h in self.api("GET", "/api/servicehosts") for s in h["servers"]
        )

    def wait_ready(self) -> None:
        wait_for(self.servicehost_up, 120, "the servicehost's PostgreSQL", interval=0.5)
        wait_for(self.backupd_answers, 120, "backupd through the API", interval=0.5)

    def stop_backupd(self) -> None:
        """bak1's backupd stopped as a shutdown would (SIGTERM)."""
        self.net.stop_host(self.bak)

    def start_backupd(self, env: dict[str, str]) -> None:
        """bak1's backupd started again, with `env` added to its environment."""
        self.host_env[self.bak.ip] = env
        self.start_daemons(self.bak)
        wait_for(self.backupd_answers, 120, "backupd through the API", interval=0.5)

    # ------------------------------------------------------------ apps

    def app_with_postgres(self, app: str) -> str:
        """A new app with a database; its DATABASE_URL (the app's own role)."""
        self.cli("apps", "create", app)
        self.cli("services", "add", "postgres", "--app", app)
        return str(self.service_info(app, "postgres")["url"])

    def service_info(self, app: str, kind: str) -> dict[str, Any]:
        out = self.cli("services", "info", kind, "--json", "--app", app).stdout
        return dict(json.loads(out))

    def listing(self, app: str) -> dict[str, Any]:
        """`roost backups list APP --json`: entries (oldest first), window, health."""
        return dict(json.loads(self.cli("backups", "list", app, "--json").stdout))

    def entries(self, app: str) -> list[dict[str, Any]]:
        return list(self.listing(app)["entries"])

    def events(self, app: str = "") -> list[dict[str, Any]]:
        rows = self.api("GET", "/api/events", params={"limit": 1000})
        return [e for e in rows if not app or e["app"] == app]

    # ------------------------------------------------------------ the hosts, from outside

    def superuser_sql(self, database: str, statement: str) -> list[str]:
        """`statement` as the servicehost's superuser, from loopback in svc1's
        namespace (the only place pg_hba lets it in from); rows, tab-separated."""
        state = json.loads((self.svc.data / "servicehost" / "state.json").read_text())
        pg = state["postgres"]
        conninfo = (
            f"host=127.0.0.1 port={pg['port']} user={pg['superuser']} "
            f"password={pg['password']} dbname={database}"
        )
        psql = find_binaries().pg("psql")
        r = self.run_in(self.svc, [psql, "-X", "-At", "-d", conninfo, "-c", statement])
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout.splitlines()

    def local_repo(self) -> Repo:
        """bak1's local restic repository (read with backupd's password)."""
        layout = Layout(self.bak.data)
        return Repo(local_location(layout), layout)

    def run_in(
        self, host: Host, argv: list[str], stdin: str = "", timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """`argv` in `host`'s namespace, `stdin` its whole input (then closed)."""
        return subprocess.run(
            ["ip", "netns", "exec", host.ns, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def probe(self, host: Host, key: str, app: str, *requests: str) -> dict[str, str]:
        """From inside `host`, with its key `key`: backupd's answer to each of
        `requests` about `app` (see tests/cluster/backups_probe.py)."""
        argv = [sys.executable, "-m", "tests.cluster.backups_probe", str(host.data), key, app]
        r = self.run_in(host, ["env", f"--chdir={REPO}", *argv, *requests], timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return dict(json.loads(r.stdout))


def sql(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """One statement in its own transaction, through the app's own credentials."""
    with psycopg.connect(url, connect_timeout=10) as conn:
        cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []
