"""When a router that is ending closes a client connection (pure: tested
with a fake clock).

A router told to end (SIGTERM, SIGINT or SIGUSR2) stops accepting at once:
its listening sockets, when inherited, stay open in its successor and in
whoever bound them, so new connections wait in their kernel backlog rather
than being refused. It then drains what it holds (`worker.RouterWorker`):

- a request being read or answered finishes and gets its response; from
  the moment the drain starts, every response that has not begun says
  `Connection: close` (`Context.draining`), so a client reusing its
  keep-alive connection reads that, not a reset, and reconnects (to the
  successor);
- an idle keep-alive connection is closed once it has been quiet for
  `idle_s`: a client sending request after request reuses its connection
  long before and gets its `Connection: close` that way. Closing an idle
  connection at the instant its client reuses it is the race every HTTP/1.1
  server has at its keep-alive timeout; the wait makes it unlikely;
- at `timeout_s` (ROOST_ROUTER_DRAIN_S) whatever is left is closed, and the
  router exits once no connection remains.
"""

from __future__ import annotations

from dataclasses import dataclass

# Longer than any pause between a steady client's requests, short enough
# that a drain of idle connections takes about a second.
IDLE_S = 1.0


@dataclass(frozen=True)
class Drain:
    started: float
    timeout_s: float
    idle_s: float = IDLE_S

    @property
    def deadline(self) -> float:
        return self.started + self.timeout_s

    def close(self, now: float, busy: bool, idle_since: float) -> bool:
        """Whether to close a connection now: `busy` while a request on it is
        being read or answered (or it carries an upgraded stream),
        otherwise idle since `idle_since`."""
        if now >= self.deadline:
            return True
        return not busy and now - idle_since >= self.idle_s

    def over(self, now: float, open_connections: int) -> bool:
        """Whether the drain is done: nothing left open, or out of time."""
        return open_connections == 0 or now >= self.deadline
