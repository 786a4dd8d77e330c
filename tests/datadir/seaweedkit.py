"""A real SeaweedFS cluster on loopback for tests and bench/datadir.py: one
master, N volume servers (placement 001: two copies), one filer, M FUSE
mounts, each started by roost.datadir.seaweed's argv and stopped after
(mounts unmounted, every process waited for). Given a `FilerStore`, every
filer keeps its metadata there (weedplan.filer_toml in its working
directory), as a cluster with a PostgreSQL state database does; every
filer keeps S3 buckets in weedplan.BUCKETS_FOLDER."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy

from roost.controller import filerstore
from roost.datadir import filerfront, seaweed, weedplan
from roost.datadir.seaweed import Endpoint
from roost.datadir.weedplan import FilerStore
from tests.conftest import wait_until
from tests.pgserver import postgres_server

START_S = 60.0
STOP_GRACE_S = 2.0


def write_fsync(path: Path, data: bytes) -> None:
    """Write `data` to `path` and fsync it: once this returns, it is acknowledged."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def weed_port() -> int:
    """A port free with its +10000 (weed's gRPC port beside each HTTP one)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 55000 and _free(port + 10000):
            return port
    raise RuntimeError("no free port pair for weed")


@dataclass
class Cluster:
    base: Path
    master: Endpoint
    filer: Endpoint
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    mounts: list[Path] = field(default_factory=list)
    store: FilerStore | None = None

    def start(self, name: str, argv: list[str], cwd: Path | None = None) -> None:
        log = open(self.base / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd or self.base,
            env=seaweed.process_env(self.base),
        )
        log.close()

    def start_filer(self, name: str, at: Endpoint) -> None:
        """A filer in BASE/name: its embedded store there, or the shared one,
        and its buckets folder (filer.toml, which `weed filer` reads from its
        working directory, as weednode writes it)."""
        home = self.base / name
        home.mkdir()
        (home / weedplan.STORE_FILE).write_text(weedplan.filer_toml(self.store, home))
        argv = seaweed.filer_argv(seaweed.weed_binary(), at, self.master, home)
        self.start(name, argv, cwd=home)
        wait_until(lambda: _up(f"http://{at}/"), START_S, f"weed {name}")

    def kill(self, name: str) -> None:
        """SIGKILL a daemon (a host dying), and reap it."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def data_nodes(self) -> int:
        url = f"http://{self.master}/dir/status"
        with urllib.request.urlopen(url, timeout=5) as r:
            topo = json.load(r)["Topology"]
        return sum(len(rack.get("DataNodes") or []) for dc in topo.get("DataCenters") or []
                   for rack in dc.get("Racks") or [])  # fmt: skip

    def add_filer(self, name: str, ip: str = "") -> Endpoint:
        """Another filer: with embedded stores, filers find each other
        through the master and replay each other's metadata changes; with
        the shared store, both read and write the same rows. Given `ip`
        (another loopback address), on the first filer's ports there."""
        at = Endpoint(ip, self.filer.port) if ip else Endpoint(self.filer.ip, weed_port())
        self.start_filer(name, at)
        return at

    def front(self, name: str, filers: list[Endpoint]) -> Endpoint:
        """A filer front (HAProxy, as each mounting host runs one: roost.
        datadir.filerfront) to `filers`, the first preferred, on free ports."""
        port = weed_port()
        (ports,) = {f.port for f in filers}  # one port for every filer, as in a cluster
        text = filerfront.config(self.filer.ip, [f.ip for f in filers], ports, port)
        cfg = self.base / f"{name}.cfg"
        cfg.write_text(text)
        self.start(name, filerfront.argv("haproxy", str(cfg)))
        at = filerfront.front(self.filer.ip, port)
        wait_until(lambda: _up(f"http://{at}/"), START_S, f"filer front {name}")
        return at

    def mount(self, name: str, filers: list[Endpoint] | None = None) -> Path:
        """A FUSE mount at BASE/name, of the filer (or of `filers`, tried in turn)."""
        point = self.base / name
        point.mkdir(exist_ok=True)
        cache = self.base / f"{name}-cache"
        cache.mkdir(exist_ok=True)
        argv = seaweed.mount_argv(seaweed.weed_binary(), self.filer, point, cache)
        if filers:
            listed = ",".join(str(f) for f in filers)
            argv = [f"-filer={listed}" if a.startswith("-filer=") else a for a in argv]
        self.start(name, argv)
        wait_until(lambda: seaweed.is_mounted(point), START_S, f"weed mount at {point}")
        self.mounts.append(point)
        return point

    def stop(self) -> None:
        for point in self.mounts:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        # One grace for all, then SIGKILL: what they hold is thrown away, and
        # a filer's graceful stop waits out open gRPC streams (~17 s, measured
        # in servicehost/s3.py); a wait of its own for each cost 15 s a test.
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.procs.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if isinstance(proc.args, list):
                seaweed.forget_mount_socket([str(a) for a in proc.args])
        self.procs.clear()


def listed(filer: Endpoint, directory: str) -> set[str]:
    """The names the filer at `filer` holds in `directory` (from its store;
    empty when it does not answer)."""
    req = urllib.request.Request(
        f"http://{filer}{directory}?limit=1000", headers={"Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            entries = json.load(r).get("Entries") or []
    except OSError:
        return set()
    return {e["FullPath"].rsplit("/", 1)[1] for e in entries}


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def seaweed_cluster(
    base: Path, volumes: int = 2, store: FilerStore | None = None
) -> Iterator[Cluster]:
    weed = seaweed.weed_binary()
    ip = "127.0.0.1"
    c = Cluster(base, Endpoint(ip, weed_port()), Endpoint(ip, weed_port()), store=store)
    try:
        (base / "master").mkdir()
        c.start("master", seaweed.master_argv(weed, c.master, base / "master"))
        wait_until(lambda: _up(f"http://{c.master}/cluster/status"), START_S, "weed master")
        for i in range(volumes):
            d = base / f"volume{i}"
            d.mkdir()
            c.start(f"volume{i}", seaweed.volume_argv(weed, Endpoint(ip, weed_port()), d, c.master))
        wait_until(lambda: c.data_nodes() == volumes, START_S, f"{volumes} volume servers")
        c.start_filer("filer", c.filer)
        yield c
    finally:
        c.stop()


@contextlib.contextmanager
def postgres_store_cluster(base: Path) -> Iterator[Cluster]:
    """`seaweed_cluster` whose filers keep the tree in one PostgreSQL store,
    made as a controller makes it (roost.controller.filerstore)."""
    with postgres_server() as admin:
        url = sqlalchemy.make_url(admin)
        assert url.host is not None and url.port is not None
        store = FilerStore(hosts=[url.host], port=url.port, password="filers_password_0123")
        filerstore.ensure(admin, store)
        with seaweed_cluster(base, store=store) as c:
            yield c
