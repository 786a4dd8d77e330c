"""Watching a cluster from outside: route publications, traffic, the router's log.

- `RouteWatcher` subscribes to every controller's "routes" publications with
  a router's key (as a router does), follows snapshots and deltas by version
  and fencing token, and keeps every table it held with the time it got it.
- `Traffic` sends requests through a router without pause and records each
  outcome, so a test can say how many failed during an incident.
- `routed_instances` reads the router's access log (`inst=`), in order: what
  the router actually sent each request to.

"Copies of one instance" are backends of the same (app, process type, index)
served from different hosts; the index is part of the instance id
(`APP-TYPE-IDX-vREL-XXXXXX`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from roost.wire.bootstrap import open_node
from roost.wire.messages import AppRoute, RouteDelta, RouteSnapshot, RouteSnapshotRequest
from roost.wire.pubsub import Subscriber
from roost.wire.rpc import RpcClient


def copy_key(instance_id: str) -> str:
    """'hello-web-2-v1-abcdef' -> 'hello-web-2' (app, process type, index)."""
    parts = instance_id.rsplit("-", 2)
    return parts[0] if len(parts) == 3 and parts[1].startswith("v") else instance_id


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() when the watcher held this table
    fence: int
    version: int
    backends: dict[str, tuple[tuple[str, str], ...]]  # app -> ((instance_id, host_id), ...)


@dataclass
class RouteWatcher:
    data_dir: Path  # a data directory that joined the cluster
    history: list[Seen] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> RouteWatcher:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    # ------------------------------------------------------------ queries

    def latest(self) -> Seen | None:
        with self._lock:
            return self.history[-1] if self.history else None

    def backends(self, app: str) -> tuple[tuple[str, str], ...]:
        seen = self.latest()
        return seen.backends.get(app, ()) if seen else ()

    def since(self, t: float) -> list[Seen]:
        """Tables held from time `t` on (including the one current at `t`)."""
        with self._lock:
            before = [s for s in self.history if s.at <= t][-1:]
            return before + [s for s in self.history if s.at > t]

    def max_copies(self, app: str, since: float = 0.0) -> int:
        """Most backends of one (app, type, index) in any table held since `since`."""
        most = 0
        for seen in self.since(since):
            counts = Counter(copy_key(iid) for iid, _ in seen.backends.get(app, ()))
            most = max(most, *counts.values(), 0)
        return most

    # ------------------------------------------------------------ the loop

    async def _main(self) -> None:
        node, cluster = open_node(self.data_dir, "router")
        async with node:
            sub = Subscriber(node, cluster.of("controller-pub"), ["routes"])
            rpc = RpcClient(node, cluster.of("controller"))
            fence = version = -1
            routes: dict[str, AppRoute] = {}
            want_snapshot = True
            try:
                while not self._stop.is_set():
                    if want_snapshot:
                        with contextlib.suppress(Exception):
                            snap = await rpc.call(RouteSnapshotRequest(), timeout=1.0, tries=2)
                            if isinstance(snap, RouteSnapshot) and (snap.fence, snap.version) >= (
                                fence,
                                version,
                            ):
                                fence, version = snap.fence, snap.version
                                routes = {r.app: r for r in snap.routes}
                                want_snapshot = False
                                self._record(fence, version, routes)
                    for _topic, msg, _gap in await sub.recv(timeout=0.2):
                        if isinstance(msg, RouteSnapshot):  # a new lease holder's first word
                            if (msg.fence, msg.version) > (fence, version):
                                fence, version = msg.fence, msg.version
                                routes = {r.app: r for r in msg.routes}
                                want_snapshot = False
                                self._record(fence, version, routes)
                            continue
                        if not isinstance(msg, RouteDelta) or msg.fence < fence:
                            continue  # a deposed controller's, or not a delta
                        if msg.fence == fence and msg.version <= version:
                            continue  # the other replica's copy of one we have
                        if msg.fence != fence or msg.base_version != version:
                            want_snapshot = True
                            continue
                        for name in msg.removals:
                            routes.pop(name, None)
                        for r in msg.upserts:
                            routes[r.app] = r
                        version = msg.version
                        self._record(fence, version, routes)
            finally:
                sub.close()
                await rpc.close()

    def _record(self, fence: int, version: int, routes: dict[str, AppRoute]) -> None:
        backends = {
            name: tuple((b.instance_id, b.host_id) for b in r.backends)
            for name, r in routes.items()
        }
        with self._lock:
            self.history.append(Seen(time.monotonic(), fence, version, backends))


@dataclass
class Outcome:
    at: float
    status: int  # 0: the request failed without an HTTP answer
    text: str


class Traffic:
    """GETs through a router from a few threads, back to back, until stopped.

    Several clients, so that one request stuck on a host that died under it
    (it was in flight at the moment of the incident: nothing can answer it)
    does not stop the traffic that shows whether the app keeps answering.
    """

    def __init__(
        self, url: str, host: str, clients: int = 3, timeout: float = 15.0, pause: float = 0.02
    ) -> None:
        self.url = url
        self.host = host
        self.timeout = timeout
        self.pause = pause
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as http:
            while not self._stop.is_set():
                t = time.monotonic()
                # The id carries the start time: the router logs requests when
                # they end, and `routed_instances` wants them in routing order.
                rid = f"traffic-{time.time_ns()}"
                try:
                    r = http.get(self.url, headers={"Host": self.host, "X-Request-Id": rid})
                    outcome = Outcome(t, r.status_code, r.text[:200])
                except httpx.HTTPError as exc:
                    outcome = Outcome(t, 0, f"{type(exc).__name__}: {exc}")
                with self._lock:
                    self.outcomes.append(outcome)
                time.sleep(self.pause)

    def _since(self, since: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.at >= since]

    def failures(self, since: float = 0.0) -> list[Outcome]:
        """Failed requests among those *started* at or after `since`."""
        return [o for o in self._since(since) if o.status != 200]

    def count(self, since: float = 0.0) -> int:
        return len(self._since(since))


_LINE = re.compile(r" app=(\S+) inst=(\S+) .* rid=(\S+)")


def routed_instances(access_log: Path, app: str, offset: int = 0) -> list[str]:
    """Instance ids the router sent `app`'s requests to, from byte `offset` of its
    access log, in the order the requests arrived: `Traffic`'s requests only,
    ordered by the start time it puts in the request id (the log itself is in
    order of completion)."""
    try:
        with open(access_log, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    found: list[tuple[int, int, str]] = []
    for n, line in enumerate(text.splitlines()):
        m = _LINE.search(line)
        if m and m.group(1) == app and m.group(2) != "-":
            rid = m.group(3)
            if rid.startswith("traffic-") and rid[8:].isdigit():  # Traffic's, start known
                found.append((int(rid[8:]), n, m.group(2)))
    return [iid for _, _, iid in sorted(found)]


def interleaved_copies(instances: list[str]) -> list[str]:
    """Copies the router used alternately: for one (app, type, index), a copy that
    served again after another copy had taken over. [] when none."""
    last: dict[str, str] = {}
    retired: set[str] = set()
    bad: list[str] = []
    for iid in instances:
        key = copy_key(iid)
        prev = last.get(key)
        if prev is not None and prev != iid:
            retired.add(prev)
        if iid in retired:
            bad.append(iid)
        last[key] = iid
    return bad


def max_copies_at_once(instances: list[str]) -> int:
    """Most copies of one (app, type, index) whose requests interleave in the log.

    Each instance id spans from its first to its last request (log order);
    copies of one key whose spans overlap were both in use at once.
    """
    spans: dict[str, list[int]] = {}
    for n, iid in enumerate(instances):
        span = spans.setdefault(iid, [n, n])
        span[1] = n
    by_key: dict[str, list[tuple[int, int]]] = {}
    for iid, (first, last) in spans.items():
        by_key.setdefault(copy_key(iid), []).append((first, last))
    most = 0
    for ranges in by_key.values():
        events = sorted(
            [(a, 1) for a, _ in ranges] + [(b, -1) for _, b in ranges], key=lambda e: (e[0], -e[1])
        )
        live = 0
        for _, step in events:
            live += step
            most = max(most, live)
    return most
