"""A whole platform whose servicehosts `cluster init` makes a pair (issue 16),
shared by the modules that test pairs through the platform.

Namespace hosts: a controller, a runner, a router and two servicehosts (the
pair), plus `spares` servicehosts that `cluster init` leaves out of it. The
state database is one PostgreSQL in the root namespace, as the other
cluster tests have it; etcd (`roost statedb`, `--etcd-hosts`) runs on the
hosts `etcd` names:

- "pair": the controller's host and both pair hosts (losing one of the
  pair loses an etcd member too);
- "away": the controller, runner and router hosts (losing both of the pair
  leaves etcd whole);
- "all": the five of them (losing both of the pair leaves three of five).

`backupds` adds backup hosts (`roost backupd`, `cluster init --backupds`).

`pair_cluster` starts one, waits for the pair's Patroni to have a primary
and a synchronous standby, and deploys the app of tests/cluster/pairapp
(`APP`), which writes a row per request (`Writer`) through the runner's
data proxy.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from roost.runner.dataproxy import servers_up
from tests.cluster.cluster import RoostCluster, wait_for
from tests.cluster.harness import Host
from tests.tmpfs import tmpfs_dir

APP = "ledger"
SOURCE = Path(__file__).parent / "pairapp"
REST_PORT = 8009  # the pair's Patroni (roost.servicehost.pgpair)

EtcdPlace = Literal["pair", "away", "all"]


class PairCluster(RoostCluster):
    """Two servicehosts that `cluster init` pairs, `spares` more; etcd where
    `etcd` says (module docstring)."""

    def __init__(
        self,
        base: Path,
        *,
        spares: int = 0,
        etcd: EtcdPlace = "pair",
        env: dict[str, str] | None = None,
        backupds: int = 0,
    ) -> None:
        super().__init__(
            base,
            controllers=1,
            runners=1,
            routers=1,
            servicehosts=2 + spares,
            backupds=backupds,
            env=env,
        )
        self.etcd_place: EtcdPlace = etcd

    @property
    def pair(self) -> list[Host]:
        """The servicehosts `cluster init` pairs (the spares come after)."""
        return self.servicehosts[:2]

    @property
    def spares(self) -> list[Host]:
        return self.servicehosts[2:]

    @property
    def etcd_hosts(self) -> list[Host]:
        away = [self.controllers[0], self.runners[0], self.routers[0]]
        if self.etcd_place == "away":
            return away
        if self.etcd_place == "all":
            return [*away, *self.pair]
        return [self.controllers[0], *self.pair]

    def state_args(self) -> list[str]:
        return [*super().state_args(), "--etcd-hosts", ",".join(h.ip for h in self.etcd_hosts)]

    def start_state(self) -> None:
        for h in self.etcd_hosts:  # etcd alone: the state database is the root's PostgreSQL
            argv = [sys.executable, "-m", "roost", "--data", str(h.data), "statedb"]
            self.net.spawn(h, argv, self.env_for(h.ip), self.base / "logs" / f"{h.name}-etcd.log")

    # ------------------------------------------------------------ the pair's Patroni

    def rest(self, host: Host, port: int, path: str, timeout: float = 2) -> httpx.Response:
        """GET `path` on a Patroni REST API, through the cluster's one HTTP
        client: the tests poll these several times a second, and a client
        made per call (httpx.get) costs ~20 ms of CPU for its TLS context."""
        return self._http.get(f"http://{host.ip}:{port}{path}", timeout=timeout)

    def patroni(self, host: Host, path: str) -> int:
        """The status code of `path` on `host`'s Patroni (0: no answer)."""
        if host.partitioned:
            return 0
        try:
            return self.rest(host, REST_PORT, path).status_code
        except httpx.TransportError:
            return 0

    def primary(self) -> Host | None:
        up = [h for h in self.servicehosts if self.patroni(h, "/primary") == 200]
        return up[0] if len(up) == 1 else None

    def synchronous(self) -> bool:
        return any(self.patroni(h, "/sync") == 200 for h in self.servicehosts)

    def sync_standby(self, primary: Host) -> str:
        """The member `primary`'s Patroni names synchronous standby ('' if none)."""
        try:
            body = self.rest(primary, REST_PORT, "/cluster").json()
        except (httpx.HTTPError, ValueError):
            return ""
        return next(
            (m["name"] for m in body.get("members", []) if m.get("role") == "sync_standby"), ""
        )

    # ------------------------------------------------------------ logs

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


@contextlib.contextmanager
def pair_cluster(
    prefix: str,
    *,
    spares: int = 0,
    etcd: EtcdPlace = "pair",
    env: dict[str, str] | None = None,
    cls: type[PairCluster] = PairCluster,
    backupds: int = 0,
) -> Iterator[PairCluster]:
    """A PairCluster (or `cls`) started in a new directory, its pair whole
    and `APP` deployed; stopped on leaving, its logs printed when the body
    fails. The directory (PostgreSQL's, etcd's and the hosts' data: about
    1.2 GB) is a tmpfs of its own (tests/tmpfs.py): every commit's fsync
    (Patroni's synchronous pair, etcd's log) and the removal at the end
    waited behind other processes' writes on the busy disk."""
    with (
        tmpfs_dir(prefix) as base,
        cls(base, spares=spares, etcd=etcd, env=env, backupds=backupds) as c,
    ):
        try:
            wait_for(c.primary, 120, "the pair's Patroni to elect a primary")
            wait_for(c.synchronous, 120, "the pair's standby to be synchronous")
            c.deploy(APP, SOURCE)
            yield c
        except BaseException:
            print(c.logs_tail(), c.pair_logs())
            raise


PACE_S = 0.03


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
                    # PACE_S apart at least: a few dozen a second shows a
                    # failover's gap as well, and flat out every request
                    # costs CPU (router, app, both PostgreSQL members, this
                    # process) for as long as the test runs.
                    self._stop.wait(PACE_S)
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


def redis_info(rc: RoostCluster) -> dict[str, Any]:
    """The app's Redis as the API reports it (what `roost services info redis
    --json` prints), asked in this process: the tests poll it several times
    a second, and a CLI run is ~0.2 s of CPU each."""
    return dict(rc.api("GET", f"/api/apps/{APP}/services/redis"))


def redis_whole(rc: RoostCluster) -> bool:
    """Master and replica named, nothing wrong."""
    now = redis_info(rc)
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
