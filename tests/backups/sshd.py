"""A real OpenSSH server for the offsite (SFTP) location's tests.

`sftp_server()` runs `/usr/sbin/sshd -D -e -f CONFIG` on a free loopback
port with a host key of its own. Its one account is root, and only as an
SFTP store: `ForceCommand internal-sftp` (no shell, no exec, no forwarding)
inside `ChrootDirectory`, public-key authentication only, and only the keys
the test authorises. A chroot must be owned by root and no directory on its
path may be group- or world-writable, so the server's files live in a
directory made under /run rather than pytest's /tmp (which is 1777).

When the context ends the listener and every session it forked (sshd puts
each connection in a session of its own, outside the listener's process
group) are killed and the directory is removed: nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.conftest import free_port, wait_until

SSHD = "/usr/sbin/sshd"


def keygen(path: Path, comment: str = "test") -> str:
    """A new ed25519 key pair at `path`; returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


@dataclass
class SftpServer:
    base: Path
    port: int
    user: str = "root"
    host: str = "127.0.0.1"
    host_key_pub: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def chroot(self) -> Path:
        return self.base / "chroot"

    @property
    def log(self) -> Path:
        return self.base / "sshd.log"

    def on_disk(self, inside: str) -> Path:
        """Where a path as the SFTP client sees it lives on this machine."""
        return self.chroot / inside.lstrip("/")

    def known_hosts_line(self) -> str:
        key_type, key = self.host_key_pub.split()[:2]
        return f"[{self.host}]:{self.port} {key_type} {key}"

    def authorize(self, *public_keys: str) -> None:
        """Exactly these keys may log in (`restrict`: no pty, no forwarding)."""
        lines = "".join(f"restrict {k}\n" for k in public_keys)
        path = self.base / "authorized_keys"
        path.write_text(lines)
        path.chmod(0o600)

    def new_host_key(self) -> None:
        """Replace the host key (a restart then serves the new one)."""
        for p in self.base.glob("host_ed25519*"):
            p.unlink()
        self.host_key_pub = keygen(self.base / "host_ed25519", "host")

    def start(self) -> None:
        config = self.base / "sshd_config"
        config.write_text(
            f"Port {self.port}\n"
            f"ListenAddress {self.host}\n"
            f"HostKey {self.base / 'host_ed25519'}\n"
            "PidFile none\n"
            f"AuthorizedKeysFile {self.base / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "PermitRootLogin prohibit-password\n"
            f"AllowUsers {self.user}\n"
            "Subsystem sftp internal-sftp\n"
            "LogLevel VERBOSE\n"
            f"Match User {self.user}\n"
            f"  ChrootDirectory {self.chroot}\n"
            "  ForceCommand internal-sftp\n"
            "  AllowTcpForwarding no\n"
            "  X11Forwarding no\n"
            "  PermitTTY no\n"
        )
        # The privilege separation directory Debian's unit makes at boot.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._accepting, 10, f"sshd on port {self.port} (log: {self.log})")

    def _accepting(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise AssertionError(f"sshd exited: {self.log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 0.5):
            return True
        return False

    def stop(self) -> None:
        """Kill the listener and every connection's session it forked."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for p in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(family, timeout=5)


@contextlib.contextmanager
def sftp_server(*authorized_keys: str) -> Iterator[SftpServer]:
    """A running sshd serving SFTP on a free loopback port (see the module doc)."""
    base = Path(tempfile.mkdtemp(prefix="roost-sshd-", dir="/run"))
    server = SftpServer(base=base, port=free_port())
    try:
        server.chroot.mkdir(mode=0o755)
        (server.chroot / "repos").mkdir(mode=0o700)
        server.new_host_key()
        server.authorize(*authorized_keys)
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
