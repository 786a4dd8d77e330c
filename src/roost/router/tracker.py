"""Following the controllers' route publications: when to resync, what to keep.

Theory of operation (the ZeroMQ guide's "Clone" pattern): the router subscribes
first, then asks a controller for a snapshot. Deltas that cannot apply yet
(because we are waiting for, or missed, something) are buffered; once a
snapshot arrives, buffered deltas newer than it are replayed in version order.
If they still do not chain, another snapshot is wanted. A publication gap on a
socket only matters when versions do not prove continuity: a delta that
applies exactly on our version means nothing relevant was lost.

Pure: the I/O adapter (`feed.py`) feeds messages in and reads `table` and
`want_snapshot` out.
"""

from __future__ import annotations

from roost.router.table import Outcome, RouteTable, apply_delta, apply_snapshot
from roost.wire.messages import Msg, RouteDelta, RouteSnapshot

_BUFFER_LIMIT = 10_000


class RouteTracker:
    def __init__(self, table: RouteTable) -> None:
        self.table = table
        self.synced = False  # True once a snapshot has been applied
        self.want_snapshot = True
        self._buffer: dict[int, RouteDelta] = {}  # by version

    def on_publication(self, msg: Msg, gap: bool) -> bool:
        """Feed one publication; True when the table changed."""
        if isinstance(msg, RouteSnapshot):
            return self.on_snapshot(msg)
        if not isinstance(msg, RouteDelta):
            return False
        outcome, table = apply_delta(self.table, msg)
        if outcome is Outcome.APPLIED:
            self.table = table
            self._drain()
            return True
        if outcome is Outcome.RESYNC:
            self._remember(msg)
            self.want_snapshot = True
        # A gap with a delta that is already covered or stale proves nothing is
        # missing (another controller's socket delivered it); only versions decide.
        return False

    def on_snapshot(self, snap: RouteSnapshot) -> bool:
        """Apply a snapshot (from a request or a publication); True if it changed the table."""
        before = self.table
        outcome, table = apply_snapshot(self.table, snap, force=not self.synced)
        if outcome is Outcome.APPLIED:
            self.table = table
            self.synced = True
        self._drain()
        # Still want one if buffered deltas are ahead of us and do not chain.
        self.want_snapshot = bool(self._buffer) or not self.synced
        return self.table is not before

    def snapshot_failed(self) -> None:
        self.want_snapshot = True

    def _remember(self, delta: RouteDelta) -> None:
        if len(self._buffer) >= _BUFFER_LIMIT:
            self._buffer.pop(min(self._buffer))
        self._buffer[delta.version] = delta

    def _drain(self) -> None:
        """Replay buffered deltas that now chain onto the table."""
        for version in sorted(self._buffer):
            delta = self._buffer[version]
            outcome, table = apply_delta(self.table, delta)
            if outcome is Outcome.APPLIED:
                self.table = table
                del self._buffer[version]
            elif outcome is Outcome.IGNORED:
                del self._buffer[version]
            else:
                break
        # Drop what the table already covers.
        for version in [v for v in self._buffer if v <= self.table.version]:
            del self._buffer[version]
