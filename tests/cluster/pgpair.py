"""A servicehost pair's PostgreSQL in network-namespace hosts, and an app writing to it.

Three hosts: `sh1` and `sh2`, the pair's servicehosts, each running an etcd
member and its Patroni member (`python -m roost.servicehost.pgpair`, real
PostgreSQL); and `runner1`, the third etcd member and the runner's data
proxy (HAProxy with the configuration roost.runner.dataproxy renders),
listening on the runner's address. The app's database (`app1`, its own
role) is made through the pair's primary. `AppWriter` is the app: it
inserts ids 1, 2, ... one at a time through the proxy's one address and
remembers those PostgreSQL acknowledged. Shared by tests/cluster/
test_pg_pair_failover.py and bench/stateful_failover.py.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import psutil
import psycopg

from roost import patroni
from roost.runner.dataproxy import HAPROXY, ProxyListener, render
from roost.servicehost.pgpair import (
    PAIR_FILE,
    PairPlan,
    admin_url,
    for_host,
    listener_servers,
    new_pair,
)
from roost.statedb.plan import StateDbPlan, etcd_argv
from tests.cluster.cluster import wait_for
from tests.cluster.harness import Host, Network

PROXY_PORT = 6001
# One client for every kit's Patroni REST calls, polled several times a
# second: a client made per call (httpx.get) costs ~20 ms of CPU for its
# TLS context, most of this process's time in these tests.
_REST = httpx.Client(timeout=2)
APP = "app1"
APP_PASSWORD = "app1-password"


class PairKit:
    def __init__(self, net: Network) -> None:
        self.net = net
        self.base = net.base
        self.sh = [net.add_host("sh1"), net.add_host("sh2")]
        self.runner = net.add_host("runner1")
        self.hosts = [*self.sh, self.runner]
        self.plan: PairPlan = new_pair("p1", [h.ip for h in self.sh], [h.ip for h in self.hosts])
        # Each member's environment (`roost.servicehost.pgpair` reads its
        # settings from it): a test may add to it before starting one.
        self.member_env = {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}

    # ------------------------------------------------------------ start

    def start(self) -> None:
        # Patroni's unprivileged user walks down to its directory.
        self.base.chmod(0o755)
        for h in self.sh:
            h.data.parent.chmod(0o755)
        etcd = StateDbPlan(scope="pairs", etcd=[h.ip for h in self.hosts], patroni=[])
        for h in self.hosts:
            me = msgspec.structs.replace(etcd, host=h.ip)
            data = self.base / h.name / "etcd"
            argv = etcd_argv(me, patroni.binary("etcd"), data)
            self.net.spawn(h, argv, {"PATH": "/usr/bin:/bin"}, self.log(h, "etcd"))
        for h in self.sh:
            h.data.mkdir(parents=True, exist_ok=True)
            h.data.chmod(0o755)
            (h.data / PAIR_FILE).write_bytes(msgspec.json.encode(for_host(self.plan, h.ip)))
            argv = [sys.executable, "-m", "roost.servicehost.pgpair", str(h.data)]
            self.net.spawn(h, argv, self.member_env, self.log(h, "pgpair"), cwd=Path.cwd())
        cfg = self.base / "proxy"
        cfg.mkdir(mode=0o700)
        listener = ProxyListener(
            "postgres", self.plan.name, PROXY_PORT, tuple(listener_servers(self.plan))
        )
        (cfg / "haproxy.cfg").write_text(render([listener], self.runner.ip, cfg))
        self.net.spawn(
            self.runner,
            [HAPROXY, "-W", "-db", "-f", str(cfg / "haproxy.cfg")],
            {"PATH": "/usr/sbin:/usr/bin:/bin"},
            self.log(self.runner, "haproxy"),
        )
        try:
            wait_for(lambda: self.primary() is not None, 180, "a Patroni primary")
            wait_for(self.synchronous, 120, "the standby to be synchronous")
            self._make_app_database()
            wait_for(self._app_reachable, 60, "the app's database through the proxy")
        except AssertionError:
            print(self.logs_tail())
            raise

    def _make_app_database(self) -> None:
        with psycopg.connect(admin_url(self.plan), autocommit=True, connect_timeout=5) as c:
            c.execute(f"CREATE ROLE {APP} LOGIN PASSWORD '{APP_PASSWORD}'")
            c.execute(f"CREATE DATABASE {APP} OWNER {APP}")
        with psycopg.connect(self.app_url(), autocommit=True, connect_timeout=5) as c:
            c.execute("CREATE TABLE t (id bigint PRIMARY KEY, at double precision)")

    def _app_reachable(self) -> bool:
        try:
            with psycopg.connect(self.app_url(), connect_timeout=2) as c:
                c.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    # ------------------------------------------------------------ what Patroni says

    def log(self, host: Host, what: str) -> Path:
        return self.base / "logs" / f"{host.name}-{what}.log"

    def logs_tail(self, lines: int = 30) -> str:
        """The last `lines` of each log that say something (`said`)."""
        out = []
        for path in sorted((self.base / "logs").glob("*.log")):
            text = said(path.read_text(errors="replace"))[-lines:]
            out.append(f"==> {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    def rest(self, host: Host, path: str) -> httpx.Response | None:
        if host.partitioned:
            return None
        try:
            return _REST.get(f"http://{host.ip}:{self.plan.rest_port}{path}")
        except httpx.TransportError:
            return None

    def primary(self, among: list[Host] | None = None) -> Host | None:
        """The one member whose Patroni answers /primary with 200 (None: not one)."""
        up = []
        for h in among or self.sh:
            r = self.rest(h, "/primary")
            if r is not None and r.status_code == 200:
                up.append(h)
        return up[0] if len(up) == 1 else None

    def synchronous(self) -> bool:
        for h in self.sh:
            r = self.rest(h, "/sync")
            if r is not None and r.status_code == 200:
                return True
        return False

    def view(self, host: Host) -> patroni.ClusterView | None:
        r = self.rest(host, "/cluster")
        return patroni.view(r.json()) if r is not None and r.status_code == 200 else None

    def other(self, host: Host) -> Host:
        return next(h for h in self.sh if h is not host)

    # ------------------------------------------------------------ the app's side

    def app_url(self, host: str | None = None, port: int | None = None) -> str:
        return (
            f"postgresql://{APP}:{APP_PASSWORD}@{host or self.runner.ip}:{port or PROXY_PORT}/{APP}"
        )

    def member_url(self, host: Host) -> str:
        return self.app_url(host.ip, self.plan.pg_port)

    def ids(self, url: str | None = None) -> set[int]:
        with psycopg.connect(url or self.app_url(), connect_timeout=5) as c:
            return {int(r[0]) for r in c.execute("SELECT id FROM t")}


# What fills a failure's log tail and hides the promotion, demotion or
# rewind that explains it: Patroni's "no action" every loop, the REST polls
# (and the tracebacks of those a test's timeout cut short), and, while a
# member starts, its every attempt to connect.
ROUTINE = (
    "INFO: no action.",
    "INFO httpx: HTTP Request",
    "Exception happened during processing of request",
    "WARNING: Traceback",
    "Traceback (most recent call last)",
    "ConnectionResetError",
    "BrokenPipeError",
    "the database system is starting up",
    "establishing a new patroni connection",
    "Retry got exception: 'connection problems'",
    "Failed to determine PostgreSQL state from the connection",
    " - rejecting connections",
)
_STAMP = re.compile(r"^[0-9 :,.-]+(UTC )?(\[[0-9]+\] )?")


def said(text: str) -> list[str]:
    """A log's lines without the routine ones; a loop's lines that come
    again (the same but for their time) are said once, then how often the
    lines above repeated."""
    out: list[str] = []
    recent: list[str] = []  # the keys of the last few lines said
    again = 0
    for line in text.splitlines():
        if any(r in line for r in ROUTINE) or line.startswith(('  File "', "    ")):
            continue
        key = _STAMP.sub("", line)
        if key in recent:
            again += 1
            continue
        if again:
            out.append(f"    (lines above repeated, {again} in all)")
            again = 0
        out.append(line)
        recent = [*recent[-3:], key]
    if again:
        out.append(f"    (lines above repeated, {again} in all)")
    return out


# AppWriter's pause for a test that needs rows to go on, not their most:
# a few hundred a second.
PACE_S = 0.005


@dataclass
class AppWriter:
    """The app: one connection through the proxy, INSERTs one id at a time;
    on an error it reconnects (the same address) and goes on with the next
    id, never sending one twice. `acked`: (ids, when acknowledged).

    `pause_s` after each acknowledged INSERT: 0 (a lost-write test's
    pace, thousands a second, a core of CPU); a test that only needs
    rows to go on paces them, so its recovery, dump or base backup is of
    seconds' rows, not of tens of thousands."""

    url: str
    start_id: int = 1
    pause_s: float = 0.0
    acked: list[tuple[int, float]] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        next_id = self.start_id
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.url, autocommit=True, connect_timeout=2)
                i, next_id = next_id, next_id + 1
                conn.execute("INSERT INTO t (id, at) VALUES (%s, %s)", (i, time.time()))
                self.acked.append((i, time.monotonic()))
                if self.pause_s:
                    self._stop.wait(self.pause_s)
            except psycopg.Error:
                self.errors.append(time.monotonic())
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stop.set()

    def first_ack_after(self, t: float) -> float | None:
        return next((at for _, at in self.acked if at > t), None)

    def longest_gap(self, since: float) -> float:
        """The longest time without an acknowledged write, from the last one
        before `since` on: how long the app could not write."""
        times = [at for _, at in self.acked]
        before = [t for t in times if t <= since]
        times = ([before[-1]] if before else [since]) + [t for t in times if t > since]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def acked_ids(self) -> set[int]:
        return {i for i, _ in self.acked}

    def rate(self, since: float, until: float) -> float:
        n = sum(1 for _, at in self.acked if since <= at < until)
        return n / (until - since)


def start_member(kit: PairKit, host: Host) -> None:
    """Start the pair member on `host` (its plan written to its DATA first)."""
    host.data.mkdir(parents=True, exist_ok=True)
    host.data.chmod(0o755)
    (host.data / PAIR_FILE).write_bytes(msgspec.json.encode(for_host(kit.plan, host.ip)))
    argv = [sys.executable, "-m", "roost.servicehost.pgpair", str(host.data)]
    kit.net.spawn(host, argv, kit.member_env, kit.log(host, "pgpair"), cwd=Path.cwd())


def slots(kit: PairKit, host: Host) -> set[str]:
    """The replication slots on `host`'s PostgreSQL."""
    plan = kit.plan
    url = f"postgresql://postgres:{plan.superuser_password}@{host.ip}:{plan.pg_port}/postgres"
    with psycopg.connect(url, connect_timeout=5) as c:
        return {str(r[0]) for r in c.execute("SELECT slot_name FROM pg_replication_slots")}


def kill_member(network: Network, host: Host) -> None:
    """SIGKILL Patroni and PostgreSQL on `host`, leaving its etcd member."""
    for pid in network.pids(host):
        try:
            cmd = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
        if "pgpair" in cmd or "patroni" in cmd or "postgres" in cmd:
            os.kill(pid, signal.SIGKILL)
