"""A Roost cluster whose state database is Patroni on two of its hosts.

Three controller hosts, each also an etcd member (`cluster init`'s default
for --etcd-hosts); the first two run Patroni (--state-hosts), so each of
them holds a PostgreSQL, one the primary and one its synchronous standby.
Every one of the three runs `roost statedb` beside its controller. No
runner, router or builder: what is tested is the control plane and its
database. Daemon output goes to BASE/logs/HOST.log and HOST-statedb.log.
"""

from __future__ import annotations

import ssl
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy

from roost.state.db import make_engine
from roost.wire.cluster import ClusterConfig
from tests.cluster.cluster import RoostCluster, wait_for
from tests.cluster.harness import Host

REST_PORT = 8008


class StateDbCluster(RoostCluster):
    def __init__(self, base: Any, **kw: Any) -> None:
        super().__init__(base, controllers=3, runners=0, routers=0, **kw)

    @property
    def state_hosts(self) -> list[Host]:
        return self.controllers[:2]

    def state_args(self) -> list[str]:
        return ["--state-hosts", ",".join(h.ip for h in self.state_hosts)]

    def start_state(self) -> None:
        for h in self.controllers:
            argv = [sys.executable, "-m", "roost", "--data", str(h.data), "statedb"]
            self.net.spawn(
                h, argv, self.env_for(h.ip), self.base / "logs" / f"{h.name}-statedb.log"
            )
        self.state_url = ClusterConfig.load(self.controllers[0].data / "cluster.json").state_url
        try:
            wait_for(lambda: self.primary() is not None, 180, "a Patroni primary")
            wait_for(self.synchronous, 120, "the standby to be synchronous")
            wait_for(self.writable, 60, "the controllers' database to take writes")
        except AssertionError:
            print(self.logs_tail(40))
            raise

    def start_builder(self) -> None:
        """None: nothing is built here."""

    # ------------------------------------------------------------ Patroni's view

    def _rest(self, host: Host, path: str) -> int:
        try:
            # The cluster's one client: one made per poll (httpx.get) costs
            # ~20 ms of CPU for its TLS context.
            return self._http.get(f"http://{host.ip}:{REST_PORT}{path}", timeout=2).status_code
        except httpx.TransportError:
            return 0

    def primary(self) -> Host | None:
        """The member whose Patroni says it is the primary (holds the leader key)."""
        up = [h for h in self.state_hosts if not h.partitioned and self._rest(h, "/primary") == 200]
        return up[0] if len(up) == 1 else None

    def synchronous(self) -> bool:
        """A standby is the primary's synchronous one (Patroni's /sync)."""
        return any(self._rest(h, "/sync") == 200 for h in self.state_hosts if not h.partitioned)

    def health_of(self, host: Host) -> dict[str, Any]:
        """A controller's /api/health ({} when it does not answer)."""
        if host.partitioned:
            return {}
        try:
            return dict(self._http.get(self.api_url(host) + "/api/health", timeout=2).json())
        except (httpx.TransportError, ValueError):
            return {}

    def writable(self) -> bool:
        engine = make_engine(self.state_url)
        try:
            with engine.begin() as c:
                c.execute(sqlalchemy.text("SELECT 1"))
            return True
        except sqlalchemy.exc.SQLAlchemyError:
            return False
        finally:
            engine.dispose()


# ------------------------------------------------------------ what the test watches


@dataclass(frozen=True)
class LeaseSample:
    holder: str
    token: int
    expires_at: float  # the database's clock


@dataclass
class LeaseWatch:
    """The scheduler lease's row, read every `interval` through the cluster's
    state URL (so from whichever member is the primary), until stopped."""

    url: str
    interval: float = 0.2
    samples: list[LeaseSample] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        engine = make_engine(self.url)
        try:
            while not self._stop.wait(self.interval):
                try:
                    with engine.connect() as c:
                        row = c.execute(
                            sqlalchemy.text(
                                "SELECT holder, token, expires_at FROM leases "
                                "WHERE name = 'scheduler'"
                            )
                        ).first()
                except sqlalchemy.exc.SQLAlchemyError:
                    self.errors += 1
                    continue
                if row is not None:
                    self.samples.append(LeaseSample(row[0], int(row[1]), float(row[2])))
        finally:
            engine.dispose()

    def stop(self) -> None:
        self._stop.set()


def overlaps(samples: list[LeaseSample], ttl: float) -> list[str]:
    """What in the lease's history shows it held twice (empty: nothing).

    A token belongs to one holder; tokens and a token's expiry never go
    back (a committed grant or renewal lost in a failover would show so,
    or hand a token out again); and a new token's grant (its first expiry seen, less the ttl,
    on the database's clock) comes no earlier than the last expiry seen
    of the tokens before it.
    """
    problems = []
    holders: dict[int, str] = {}
    last_expiry: dict[int, float] = {}
    prev = 0
    for s in samples:
        if holders.setdefault(s.token, s.holder) != s.holder:
            problems.append(f"token {s.token} held by {holders[s.token]} and {s.holder}")
        if s.token < prev:
            problems.append(f"the token went back from {prev} to {s.token}")
        if s.token not in last_expiry and last_expiry:
            granted = s.expires_at - ttl
            before = max(last_expiry.values())
            if granted < before:
                problems.append(
                    f"token {s.token} granted at {granted:.3f}, before the earlier "
                    f"holder's lease ran out at {before:.3f}"
                )
        seen = last_expiry.get(s.token, 0.0)
        if 0.0 < s.expires_at < seen:
            problems.append(
                f"token {s.token}'s expiry went back from {seen:.3f} to {s.expires_at:.3f}"
            )
        # The latest, not the largest: a holder that gives the lease up sets it to 0.
        last_expiry[s.token] = s.expires_at
        prev = max(prev, s.token)
    return problems


@dataclass
class Writer:
    """A steady API client: creates app w0, w1, ... one at a time through the
    live controllers in turn; `acked` is those the API said were created
    (with when each request was sent, so a write that was under way when
    something happened does not count as made after it).
    A name whose request failed is never sent again (no retry, so nothing
    is written twice by the client either)."""

    urls: list[str]
    token: str
    ca: str
    acked: list[tuple[float, str]] = field(default_factory=list)
    failed: list[tuple[float, str]] = field(default_factory=list)
    skip: set[str] = field(default_factory=set)  # controllers' URLs to leave alone
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        verify = ssl.create_default_context(cafile=self.ca)
        with httpx.Client(verify=verify, timeout=10, headers=headers) as http:
            for i in _count():
                if self._stop.is_set():
                    return
                live = [u for u in self.urls if u not in self.skip]
                url = live[i % len(live)]
                name = f"w{i}"
                sent = time.monotonic()
                try:
                    r = http.post(f"{url}/api/apps", json={"name": name})
                    ok = r.status_code in (200, 201)
                except httpx.TransportError:
                    ok = False
                (self.acked if ok else self.failed).append((sent, name))
                if not ok:
                    time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()

    def acked_since(self, t: float) -> int:
        """Writes acknowledged that were sent after `t`."""
        return sum(1 for at, _ in self.acked if at > t)


def _count() -> Iterator[int]:
    i = 0
    while True:
        yield i
        i += 1
