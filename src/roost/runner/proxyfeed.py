"""What this runner's data proxy serves: DATA/dataproxy.json, from the controller.

An app whose services are on a servicehost pair connects through the data
proxy (runner/dataproxy.py) at the address its credentials name; each
instance's assignment, and each `run` session's, lists the listeners its
app needs (`InstanceAssignment.data_proxy`, controller/pairproxy.py). The
feed keeps the union of those of the current assignment and of the `run`
sessions still alive, and rewrites the listeners file whenever that
changes; `dataproxy.follow` serves the file (a reload that drops no
connection). Nothing listed (one machine, an older controller): the file
lists nothing and no HAProxy runs.

`wanted` is pure: one listener per (kind, name), the same port never
twice (two apps' listeners on one port, which only a stale assignment
could ask for, keep the first by name and log the other).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

from roost.runner.dataproxy import ProxyListener, ProxyServer, encode_listeners
from roost.wire.messages import InstanceAssignment, Msg, ProxyTarget, RunStart

log = logging.getLogger("roost.runner")

StartRun = Callable[[RunStart], Awaitable[Msg]]


def wanted(targets: Iterable[ProxyTarget]) -> list[ProxyListener]:
    """The listeners `targets` ask for, each once, sorted (pure)."""
    by_name: dict[tuple[str, str], ProxyTarget] = {}
    for t in targets:
        by_name.setdefault((t.kind, t.name), t)
    out: list[ProxyListener] = []
    ports: dict[int, str] = {}
    for (kind, name), t in sorted(by_name.items()):
        if t.local_port in ports:
            log.warning(
                "data proxy: %s %s asks for port %d, which %s has; left out",
                kind, name, t.local_port, ports[t.local_port],
            )  # fmt: skip
            continue
        ports[t.local_port] = f"{kind} {name}"
        servers = tuple(ProxyServer(h, p, c) for h, p, c in t.servers)
        out.append(ProxyListener(t.kind, t.name, t.local_port, servers, t.password))
    return out


class ProxyFeed:
    """Writes the listeners file from assignments and `run` sessions."""

    def __init__(self, path: Path, live_session: Callable[[str], bool] = lambda _s: False) -> None:
        self.path = path
        self.live_session = live_session
        self._instances: list[ProxyTarget] = []
        self._sessions: dict[str, list[ProxyTarget]] = {}
        self._written: bytes | None = None

    def assigned(self, instances: Sequence[InstanceAssignment]) -> list[InstanceAssignment]:
        """Note what the assignment's instances need; `instances`, unchanged."""
        self._instances = [t for a in instances for t in a.data_proxy]
        self.write()
        return list(instances)

    def guard(self, start: StartRun) -> StartRun:
        """`start` of a `run` session, its app's listeners listed first."""

        async def fed(msg: RunStart) -> Msg:
            if msg.assignment.data_proxy and msg.session not in self._sessions:
                self._sessions[msg.session] = list(msg.assignment.data_proxy)
                self.write(starting=msg.session)
            return await start(msg)

        return fed

    def write(self, starting: str = "") -> None:
        """Rewrite the file if what is wanted changed; sessions that ended
        are dropped (`starting`: one not live yet, kept)."""
        for sid in [s for s in self._sessions if s != starting and not self.live_session(s)]:
            del self._sessions[sid]
        targets = [*self._instances, *(t for ts in self._sessions.values() for t in ts)]
        raw = encode_listeners(wanted(targets))
        if raw == self._written:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            # Private: a Redis listener's check carries the app's password.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("data proxy: cannot write %s: %s", self.path, exc)
            return
        self._written = raw
