"""Issue 16 through the whole platform: an app's database on a servicehost
pair set up by `roost cluster init`, the servicehost holding the primary
killed under the app's writes.

Namespace hosts: a controller, a runner, a router and two servicehosts;
etcd (`roost statedb`, `--etcd-hosts`) on the controller's host and both
servicehosts; the state database one PostgreSQL in the root namespace, as
the other cluster tests have it. `cluster init` pairs the servicehosts,
each servicehost starts its Patroni member itself, the controller records
the pair, and an app (tests/cluster/pairapp) deployed with PostgreSQL and
Redis gets credentials naming its runner's data proxy, which the runner
serves from what its assignment lists. The app inserts one row per request
(acknowledged only once committed); the test asks through the router, one
row at a time, then powers the primary's servicehost off: writes resume
within 30 s through the same address (the app reconnects to DATABASE_URL),
and every row the app saw committed is there afterwards, read through the
app; its Redis answers through REDIS_URL too.
"""

from __future__ import annotations

import itertools
import json
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.runner.dataproxy import servers_up
from roost.wire.messages import DATA_PROXY_HOST
from tests.cluster.cluster import RoostCluster, wait_for
from tests.cluster.harness import Host

pytestmark = pytest.mark.cluster

APP = "ledger"
SOURCE = Path(__file__).parent / "pairapp"
REST_PORT = 8009  # the pair's Patroni (roost.servicehost.pgpair)
RESUME_S = 30.0  # issue 16: the app's writes resume within 30 s


class PairCluster(RoostCluster):
    """Two servicehosts that `cluster init` pairs, etcd on three hosts."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, controllers=1, runners=1, routers=1, servicehosts=2)

    @property
    def etcd_hosts(self) -> list[Host]:
        return [self.controllers[0], *self.servicehosts]

    def state_args(self) -> list[str]:
        return [*super().state_args(), "--etcd-hosts", ",".join(h.ip for h in self.etcd_hosts)]

    def start_state(self) -> None:
        for h in self.etcd_hosts:  # etcd alone: the state database is the root's PostgreSQL
            argv = [sys.executable, "-m", "roost", "--data", str(h.data), "statedb"]
            self.net.spawn(h, argv, self.env_for(h.ip), self.base / "logs" / f"{h.name}-etcd.log")

    def patroni(self, host: Host, path: str) -> int:
        if host.partitioned:
            return 0
        try:
            return httpx.get(f"http://{host.ip}:{REST_PORT}{path}", timeout=2).status_code
        except httpx.TransportError:
            return 0

    def primary(self) -> Host | None:
        up = [h for h in self.servicehosts if self.patroni(h, "/primary") == 200]
        return up[0] if len(up) == 1 else None

    def synchronous(self) -> bool:
        return any(self.patroni(h, "/sync") == 200 for h in self.servicehosts)

    def sentinel_logs(self) -> str:
        out = []
        for h in [*self.servicehosts, *self.controllers]:
            log = h.data / "servicehost" / "logs" / "sentinel.log"
            if log.exists():
                out.append(f"===== {h.name} sentinel\n" + log.read_text(errors="replace")[-3000:])
        runner = self.runners[0].data / "runner" / "dataproxy" / "haproxy.log"
        if runner.exists():
            out.append("===== data proxy\n" + runner.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def pair_logs(self) -> str:
        out = []
        for h in self.servicehosts:
            log = h.data / "servicehost" / "logs" / "pgpair.log"
            if log.exists():
                out.append(f"===== {h.name} pgpair\n" + log.read_text(errors="replace")[-3000:])
        return "\n".join(out)


@pytest.fixture(scope="module")
def rc(cluster_ok: None) -> Iterator[PairCluster]:
    c = PairCluster(Path(tempfile.mkdtemp(prefix="roost-pg-pair-")))
    with c:
        try:
            wait_for(c.primary, 120, "the pair's Patroni to elect a primary")
            wait_for(c.synchronous, 120, "the pair's standby to be synchronous")
            c.deploy(APP, SOURCE)
            yield c
        except BaseException:
            print(c.logs_tail(), c.pair_logs())
            raise


@dataclass
class Writer:
    """POSTs /write/1, /write/2, ... through the router, each number once;
    `acked`: (n, when) for those the app answered committed."""

    rc: RoostCluster
    acked: list[tuple[int, float]] = field(default_factory=list)
    failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n = 0
        with httpx.Client(timeout=10, headers={"Host": f"{APP}.localhost"}) as http:
            while not self._stop.is_set():
                n += 1
                try:
                    r = http.post(f"{self.rc.router_url()}/write/{n}")
                    ok = r.status_code == 200 and r.text == f"ok {n}"
                except httpx.TransportError:
                    ok = False
                if ok:
                    self.acked.append((n, time.monotonic()))
                else:
                    self.failed += 1
                    time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()

    def longest_gap(self, since: float) -> float:
        times = [at for _, at in self.acked]
        before = [t for t in times if t <= since]
        times = ([before[-1]] if before else [since]) + [t for t in times if t > since]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def redis_whole(rc: RoostCluster) -> bool:
    """Master and replica named, nothing wrong (`roost services info redis`)."""
    out = rc.cli("services", "info", "redis", "--json", "--app", APP).stdout
    now = json.loads(out)
    return bool(now.get("redis_master") and now.get("redis_replica")) and not now.get(
        "redis_problem"
    )


def app_get(rc: RoostCluster, path: str) -> httpx.Response:
    return rc.get(APP, path, timeout=10)


def proxy_stat(rc: RoostCluster) -> str:
    """The runner's data proxy's `show stat` (its stats socket, a file)."""
    path = rc.runners[0].data / "runner" / "dataproxy" / "haproxy.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(b"show stat\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def proxy_checked(rc: RoostCluster) -> bool:
    """Both listeners (the pair's, the app's Redis) with one server up: the
    proxy has checked every server (a listener's servers count as up until
    their first checks, runner/dataproxy.py)."""
    up = servers_up(proxy_stat(rc))
    return len(up) == 2 and all(len(servers) == 1 for servers in up.values())


def test_the_apps_writes_survive_losing_the_primarys_servicehost(rc: PairCluster) -> None:
    # The app's one address is its runner's data proxy, for both services.
    db_url = app_get(rc, "/env/DATABASE_URL").text
    assert f"@{DATA_PROXY_HOST}:6432/" in db_url, db_url
    assert f"@{DATA_PROXY_HOST}:" in app_get(rc, "/env/REDIS_URL").text
    try:
        wait_for(lambda: proxy_checked(rc), 30, "the data proxy to have checked every server")
        assert app_get(rc, "/redis/before").text == "before"
    except AssertionError:
        print(proxy_stat(rc), rc.logs_tail(), rc.sentinel_logs())
        raise
    info = rc.cli("services", "info", "postgres", "--app", APP).stdout
    assert "pair-1" in info, info
    # The runner's firewall lets the app reach its listener, and no longer
    # the servicehosts' PostgreSQL itself.
    assert app_get(rc, f"/reach/{DATA_PROXY_HOST}/6432").text == "open"
    for h in rc.servicehosts:
        assert app_get(rc, f"/reach/{h.ip}/5434").text == "ConnectionRefusedError"

    primary = wait_for(rc.primary, 30, "the pair's primary")
    writer = Writer(rc)
    thread = threading.Thread(target=writer.run)
    thread.start()
    try:
        wait_for(lambda: len(writer.acked) >= 100, 60, "the app's writes before the fault")
        wait_for(rc.synchronous, 30, "the standby to be synchronous before the fault")
        # Sentinel fails over only to a replica it has discovered (INFO every
        # 10 s): the Redis pair whole first, as its watch reports it.
        wait_for(lambda: redis_whole(rc), 60, "the app's Redis pair to be whole")
        killed_at = time.monotonic()
        rc.power_off(primary)
        standby = next(h for h in rc.servicehosts if h is not primary)
        try:
            wait_for(
                lambda: any(at > killed_at for _, at in writer.acked),
                RESUME_S + 30,
                "the app's writes to resume",
            )
        except AssertionError:
            print(rc.logs_tail(), rc.pair_logs())
            raise
        n = len(writer.acked)
        wait_for(lambda: len(writer.acked) >= n + 50, 60, "writes after the failover")
    finally:
        writer.stop()
        thread.join(30)
    unavailable = writer.longest_gap(killed_at)
    print(
        f"\npg pair through the platform: {primary.name} powered off; the app could not "
        f"write for {unavailable:.1f} s; {len(writer.acked)} writes acknowledged, "
        f"{writer.failed} failed"
    )
    assert rc.primary() is standby
    assert unavailable < RESUME_S
    stored: Any = app_get(rc, "/ids").json()
    lost = {n for n, _ in writer.acked} - set(stored)
    assert not lost, f"committed but lost: {sorted(lost)[:20]} ({len(lost)})"

    said: list[str] = []

    def redis_answers() -> bool:
        try:
            said.append(app_get(rc, "/redis/after").text)
        except httpx.TransportError as exc:
            said.append(str(exc))
        return said[-1] == "after"

    try:
        wait_for(redis_answers, 60, "the app's Redis through the same address")
    except AssertionError:
        print(said[-3:], rc.logs_tail(), rc.sentinel_logs())
        raise


def test_a_servicehost_restart_keeps_its_pair_member_running(rc: PairCluster) -> None:
    """The servicehost daemon handed over (SIGUSR2, as an upgrade restarts
    it) and started again: the same Patroni and PostgreSQL go on serving
    (adopted, not restarted), and the app writes through the same address."""
    host = next(h for h in rc.servicehosts if not h.partitioned)
    home = host.data / "pgpair"
    patroni_pid = int((home / "patroni.pid").read_text())
    postmaster_pid = int((home / "pgdata" / "postmaster.pid").read_text().split()[0])
    (daemon,) = [p for p in host.procs if p.poll() is None and "servicehost" in p.args]
    daemon.send_signal(signal.SIGUSR2)
    daemon.wait(60)
    rc.start_daemons(host)
    log = rc.base / "logs" / f"{host.name}.log"
    adopted = f"pgpair: adopted the running server (pid {patroni_pid})"
    wait_for(lambda: adopted in log.read_text(errors="replace"), 60, "the member adopted")
    assert int((home / "pgdata" / "postmaster.pid").read_text().split()[0]) == postmaster_pid
    assert Path(f"/proc/{postmaster_pid}").exists()

    said: list[str] = []

    def writes() -> bool:
        r = httpx.post(
            f"{rc.router_url()}/write/1000000", headers={"Host": f"{APP}.localhost"}, timeout=10
        )
        said.append(r.text)
        return said[-1] == "ok 1000000"

    try:
        wait_for(writes, 60, "a write through the app after the restart")
    except AssertionError:
        print(said[-3:], rc.logs_tail(), rc.pair_logs(), rc.sentinel_logs())
        raise
