"""Where the runner keeps things on disk, and the per-host resources it hands out.

  DATA/runner/host_id               this host's stable id (generated once)
  DATA/runner/images/               the image cache (roost.images)
  DATA/runner/store/                image copies served to other hosts (copies.py)
  DATA/runner/apps/<app>/data/      the app's data directory, pulled (no live tree here)
  APPDATA/<app>/                    the app's live data directory (roost.datadir), when
                                    the servicehost's tree reaches this host
  DATA/runner/apps/<app>/           HOME of the app's processes
  DATA/runner/apps/<app>/bundle/<id>/bundle_config.py   per instance
  DATA/runner/sockets/<id>.sock     unix sockets of web instances
  DATA/runner/shims/<id>/           an instance's shim: its socket and record

An unpacked image root gets a `data` symlink to its app's data directory, so
`../data` from the checkout (ep.io's convention) reaches persistent storage.
It must live in the image root itself, not in a symlinked release directory:
`..` from a process's cwd resolves physically.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import socket
import tempfile
from pathlib import Path

from roost.datadir.shared import app_tree, is_live, make
from roost.runner.launch import Launch
from roost.settings import Settings, parse_port_range

# sockaddr_un.sun_path is 108 bytes including the NUL on Linux.
MAX_SOCKET_PATH = 100
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class Layout:
    def __init__(
        self, data_dir: Path, appdata_root: Path | None = None, own_tree: bool = False
    ) -> None:
        self.data_dir = data_dir
        # Where the live tree would be (roost.datadir.shared.root_for); used
        # once its marker shows that the servicehost's tree is really there,
        # or at once when this DATA's servicehost keeps it (`own_tree`).
        self.appdata_root = appdata_root
        self._live = False
        # Each app's quota (roost.datadir.quota), given to its live tree
        # before its processes bind it (0: a plain directory).
        self.data_quota_mb = 0
        self.owns_tree = own_tree and appdata_root is not None
        if own_tree and appdata_root is not None:
            make(appdata_root)
            self._live = True
        self.root = data_dir / "runner"
        self.images = self.root / "images"
        self.store = self.root / "store"
        self.apps = self.root / "apps"
        self.sockets = self.root / "sockets"
        self.shims = self.root / "shims"

    def create(self) -> None:
        for d in (self.root, self.images, self.apps, self.sockets, self.shims):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.shims, 0o700)
        # Root's alone, also when an older version made it 0755: tenants reach
        # their image, home and data through their sandbox's binds, never by
        # walking here (every image, every app's home and data live below).
        os.chmod(self.root, 0o700)

    def app_home(self, app: str) -> Path:
        return self.apps / safe_name(app)

    def data_directory(self, app: str) -> Path:
        """The app's live tree when this host reaches it, else its pulled copy."""
        if self.live_data():
            assert self.appdata_root is not None
            return app_tree(self.appdata_root, app)
        return self.app_home(app) / "data"

    def live_data(self) -> bool:
        """Do apps' data directories live in the shared tree here? Once seen,
        for good: a mount that goes away must not send writes elsewhere."""
        if not self._live and self.appdata_root is not None:
            self._live = is_live(self.appdata_root)
        return self._live

    def bundle_dir(self, app: str, instance_id: str) -> Path:
        return self.app_home(app) / "bundle" / safe_name(instance_id)

    def shim_dir(self, instance_id: str) -> Path:
        """The instance's shim's directory (roost.runner.shimclient)."""
        return self.shims / safe_name(instance_id)

    def socket_path(self, instance_id: str) -> str:
        """`<dir>/<instance>/web.sock`: a directory per instance, since the
        sandboxed instance gets write access to that directory alone."""
        path = self.sockets / safe_name(instance_id) / "web.sock"
        if len(str(path)) <= MAX_SOCKET_PATH:
            return str(path)
        # A deep DATA dir would overflow sun_path: use a short private
        # directory named after the data dir (stable across restarts).
        short = self._short_sockets()
        short.mkdir(mode=0o700, exist_ok=True)
        return str(short / hashlib.sha256(instance_id.encode()).hexdigest()[:16] / "web.sock")

    def _short_sockets(self) -> Path:
        tag = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"roost-{tag}"

    def release_socket(self, path: str) -> None:
        """Remove an instance's socket directory (`socket_path`'s), and the
        short directory in the temporary one once it holds no instance's: it
        outlived every runner whose DATA was deep (one per test platform)."""
        sock_dir = Path(path).parent
        shutil.rmtree(sock_dir, ignore_errors=True)
        if sock_dir.parent == self._short_sockets():
            with contextlib.suppress(OSError):  # not empty: another instance's is there
                sock_dir.parent.rmdir()

    def host_id(self, override: str = "") -> str:
        """The override, or the id persisted in DATA/runner/host_id (made once)."""
        if override:
            return override
        path = self.root / "host_id"
        with contextlib.suppress(FileNotFoundError):
            existing = path.read_text().strip()
            if existing:
                return existing
        self.root.mkdir(parents=True, exist_ok=True)
        new = f"{safe_name(socket.gethostname())[:40]}-{secrets.token_hex(4)}"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(new + "\n")
        os.replace(tmp, path)
        return new


def safe_name(name: str) -> str:
    """`name` if it is a safe file name, else a digest of it."""
    if _SAFE_NAME.fullmatch(name) and name not in (".", ".."):
        return name
    return hashlib.sha256(name.encode()).hexdigest()[:24]


def link_data(image_root: Path, data_directory: Path) -> None:
    """Make `image_root/data` a symlink to `data_directory` (idempotent, atomic)."""
    data_directory.mkdir(parents=True, exist_ok=True)
    link = image_root / "data"
    target = str(data_directory)
    if link.is_symlink() and os.readlink(link) == target:
        return
    if link.exists() and not link.is_symlink():
        raise RuntimeError(
            f"image {image_root.name} has its own 'data' entry; cannot link data dir"
        )
    tmp = image_root / f".data.{secrets.token_hex(4)}"
    os.symlink(target, tmp)
    os.replace(tmp, link)


def materialize(launch: Launch) -> None:
    """Write what a run needs on disk besides the image (idempotent)."""
    if launch.bundle_config_dir is not None:
        launch.bundle_config_dir.mkdir(parents=True, exist_ok=True)
        path = launch.bundle_config_dir / "bundle_config.py"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(launch.bundle_config)
        os.replace(tmp, path)
        if launch.preload is not None:
            name, text = launch.preload
            path = launch.bundle_config_dir / name
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
    for link, target in launch.symlinks:
        if link.is_symlink() and os.readlink(link) == str(target):
            continue
        if link.exists() and not link.is_symlink():
            raise RuntimeError(f"cannot link {link.name} to {target}: the image has a file there")
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp_link = link.with_name(f".{link.name}.{secrets.token_hex(4)}")
        os.symlink(target, tmp_link)
        os.replace(tmp_link, link)


class PortAllocator:
    """TCP ports for instances from one fixed range, never handing out one twice.

    A fixed range is what lets the firewall (roost.tenant.firewall) say "only
    routers reach these". Ports taken by anything else on the host are skipped.
    The allocator walks the range round-robin from a random start instead of
    taking the lowest free port: a port just released may still be in some
    router's table for a moment, and handing it to another app's instance at
    once would send that app's requests there.
    """

    def __init__(
        self, host: str = "", ports: range | None = None, start: int | None = None
    ) -> None:
        self.host = host
        self.ports = parse_port_range(Settings().instance_ports) if ports is None else ports
        if not self.ports:
            raise ValueError("the instance port range is empty")
        self.in_use: set[int] = set()
        self._next = secrets.randbelow(len(self.ports)) if start is None else start

    def allocate(self) -> int:
        n = len(self.ports)
        for i in range(n):
            index = (self._next + i) % n
            port = self.ports[index]
            if port not in self.in_use and self._free(port):
                self._next = (index + 1) % n
                self.in_use.add(port)
                return port
        raise RuntimeError(
            f"no free TCP port in {self.ports[0]}-{self.ports[-1]} (ROOST_INSTANCE_PORTS)"
        )

    def release(self, port: int) -> None:
        self.in_use.discard(port)

    def _free(self, port: int) -> bool:
        # SO_REUSEADDR as gunicorn binds: a port whose old connections linger
        # in TIME_WAIT is free to it; one with a listener is not.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((self.host, port))
            except OSError:
                return False
        return True
