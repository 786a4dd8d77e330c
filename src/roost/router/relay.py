"""Proxying one request to an instance: connect or reuse, stream, retry.

Theory of operation: the request head is written as soon as an instance
connection is ready and the body streams as it arrives; until then it is
buffered (bounded: reading from the client pauses). Everything sent is also
kept, up to `replay_bytes`, so that a retry can replay it.

Retry rules (`safe_to_retry`, pure): a connection that could not be made is
always retried on another instance (nothing was sent). Once the request was
sent, it is retried only if its method is idempotent, nothing at all came back,
and the replay buffer still holds everything sent (a PUT whose body outgrew it
is not). A fresh connection that fails counts against its instance (passive
health, possibly ejecting it); a pooled connection that turns out dead does not
(the instance just closed an idle keep-alive). At most `max_attempts` tries,
each on an instance that has not failed this request, picked from the app's
entry in the current route table: an instance that is going away (its app
redeployed) fails a request that began before the table changed, and the
retry then goes to the instances that replace it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from roost.router import upgrade
from roost.router.balance import Slot, record_success
from roost.router.clienterror import abort_response, local_error
from roost.router.h1 import IDEMPOTENT, LAST_CHUNK, chunk

if TYPE_CHECKING:
    from roost.router.client import ClientConnection
    from roost.router.exchange import Exchange
    from roost.router.table import AppEntry
    from roost.router.upstream import Upstream

log = logging.getLogger("roost.router")

try:
    import cython
except ImportError:  # (Cython is a build tool: the router runs as plain Python without it)
    from types import SimpleNamespace

    cython = SimpleNamespace(
        compiled=False, freelist=lambda n: lambda cls: cls, cclass=lambda cls: cls
    )


def safe_to_retry(sent: bool, method: bytes, replayable: bool, received: bool) -> bool:
    """Whether a request whose instance failed may go to another (the module
    docstring's rules): never once any byte came back (`received`); always
    when nothing was `sent` (the connection was never made); else only an
    idempotent method whose every byte sent is still held (`replayable`)."""
    if received:
        return False
    return not sent or (replayable and method in IDEMPOTENT)


def _exchange(relay: Relay) -> Exchange:
    return relay  # type: ignore[return-value]  # a Relay is always an Exchange


# Compiled, the objects' memory is kept on a freelist and reused: an Exchange
# is made and freed every request (here, on the base: Cython keeps freelists
# on base types only, and reuses a slot for a type of the same size, which
# Exchange is: it adds no fields, relay.pxd declares them all). (`cclass`
# restates what relay.pxd says: Cython takes the freelist only with it.)
@cython.freelist(64)
@cython.cclass
class Relay:
    """The proxying half of `Exchange` (which sets the request fields)."""

    # Fields (all set in Exchange.__init__): slots make them cheap to reach.
    __slots__ = (
        "aborted",
        "attempts",
        "body_done",
        "client",
        "connect_deadline",
        "connect_task",
        "done",
        "entry",
        "failed",
        "keep_alive",
        "local",
        "method",
        "pending",
        "pending_size",
        "replay",
        "replay_head",
        "replay_size",
        "replayable",  # everything sent so far is kept in `replay_head` and `replay`
        "req_chunked",
        "rid",
        "slot",
        "slot_held",
        "up",
    )
    client: ClientConnection
    pending: list[bytes]
    method: bytes
    rid: bytes
    entry: AppEntry | None
    body_done: bool
    keep_alive: bool
    done: bool
    local: bool
    aborted: bool
    slot: Slot | None
    slot_held: bool
    up: Upstream | None
    connect_task: Any
    connect_deadline: float  # (coarse clock) while connect_task runs: the sweep's to enforce
    req_chunked: bool
    pending_size: int
    replay_size: int
    attempts: int
    replayable: bool
    replay_head: bytes | None  # what attach() sent first (the head, and any body then)
    replay: list[bytes] | None  # what was sent after it, made only when something is
    failed: list[Slot] | tuple[()]  # instances that failed this request

    # ---------------------------------------------------------------- proxying

    def proxy(self) -> None:
        ctx = self.client.ctx
        entry = self.entry
        assert entry is not None
        slots = entry.slots
        slot: Slot | None = None
        if slots is not None and len(slots) == 1 and not self.failed:
            slot = slots[0]  # the common small app (Balancer.choose, inline)
            if slot.ejected_until > ctx.now:
                slot = None
        if slot is None:
            slot = ctx.balancer.choose(entry, ctx.now, self.failed)
        if slot is None:
            if self.attempts:
                self._bad_gateway()
            else:
                local_error(
                    self.client,
                    _exchange(self),
                    503,
                    "No instance is running",
                    "This app has no running web instance right now. Please try again shortly.",
                    extra=[(b"Retry-After", b"5")],
                )
            return
        self.attempts += 1
        self.slot = slot
        self.slot_held = True
        slot.outstanding += 1
        idle = slot.idle
        while idle:
            up = idle.pop()
            if not up.closed:
                self.attach(up)
                return
        # The connect's deadline is the sweep's (ClientConnection.check calls
        # connect_timeout), like every other deadline here: a timer per
        # connect (asyncio.timeout) cost a connect half again as much, and its
        # objects set off garbage collections amid a burst of connects.
        self.connect_deadline = ctx.now + ctx.limits.connect_timeout
        self.connect_task = ctx.spawn(self._connect(slot))

    def connect_timeout(self) -> None:
        """The sweep found the connect past its deadline: give it up, as a
        failed connect (never sent: another instance may take it)."""
        task = self.connect_task
        if task is None or self.aborted:
            return
        self.connect_task = None
        task.cancel()  # (its connection, if made meanwhile, is closed by the cancel)
        slot = self.slot
        assert slot is not None
        limit = self.client.ctx.limits.connect_timeout
        self._retry(slot, f"connect failed: no answer in {limit:g} s", counts=True)

    async def _connect(self, slot: Slot) -> None:
        # (imported here: upstream.py and this module refer to each other's types)
        from roost.router.upstream import open_upstream

        try:
            up = await open_upstream(self.client.ctx, slot)
        except Exception as exc:  # refused, unreachable: the instance failed
            self.connect_task = None
            if not self.aborted:  # (never sent: safe_to_retry always)
                self._retry(slot, f"connect failed: {type(exc).__name__}: {exc}", counts=True)
            return
        self.connect_task = None
        if self.aborted:
            up.close()
            return
        self.attach(up)

    def attach(self, up: Upstream) -> None:
        self.up = up
        up.begin(self)  # type: ignore[arg-type]  # (hot path: no cast call; always an Exchange)
        pending = self.pending
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()  # (the list is the exchange's own: kept, not made again)
        if self.pending_size:
            self.pending_size = 0
            self.client.resume(4)
        if self.replayable:
            # Keep what was sent until an answer starts, for a retry: as bytes,
            # not a list, since a plain request sends nothing more.
            self.replay_size = len(data)
            if self.replay_size > self.client.ctx.replay_bytes:
                self.replayable = False
            else:
                self.replay_head = data
        up.write(data)
        if self.client.write_paused:
            up.pause_reading()

    def send_body(self, data: bytes) -> None:
        if self.req_chunked:
            data = chunk(data)
        self._send(data)

    def end_body(self) -> None:
        self.body_done = True
        if self.req_chunked:
            self._send(LAST_CHUNK)

    def _send(self, data: bytes) -> None:
        if self.done or self.local:
            return
        up = self.up
        if up is not None:
            up.write(data)
            if self.replayable and self.replay_head is not None:
                self.replay_size += len(data)
                if self.replay_size > self.client.ctx.replay_bytes:
                    self.replayable = False
                    self.replay_head = None
                    self.replay = None
                elif self.replay is None:
                    self.replay = [data]
                else:
                    self.replay.append(data)
        else:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > self.client.ctx.buffer_bytes:
                self.client.pause(4)

    def _release_slot(self) -> None:
        if self.slot_held:
            self.slot_held = False
            assert self.slot is not None
            self.slot.outstanding -= 1

    def _retry(self, slot: Slot, why: str, *, counts: bool) -> None:
        """The attempt on `slot` failed before anything came back: try another
        instance if the rules allow (see the module docstring), else 502."""
        self._release_slot()
        ctx = self.client.ctx
        if counts:
            if not self.failed:
                self.failed = []
            self.failed.append(slot)
            if ctx.balancer.failed(slot, ctx.clock()):
                app = self.entry.name if self.entry is not None else "?"
                log.warning("ejected instance %s of %s: %s", slot.backend.instance_id, app, why)
        log.info("request %s to %s failed: %s", self.rid.decode(), slot, why)
        if self.attempts >= ctx.max_attempts:
            self._bad_gateway()
            return
        if self.replay_head is not None:  # it was sent: send it all again
            self.pending = [self.replay_head, *(self.replay or ()), *self.pending]
            self.replay_head = None
            self.replay = None
        entry = ctx.table.lookup(_exchange(self).host)
        if entry is not None and self.entry is not None and entry.name == self.entry.name:
            self.entry = entry  # the app's instances now (slots, and so `failed`, carry over)
        self.proxy()

    def _bad_gateway(self) -> None:
        local_error(
            self.client,
            _exchange(self),
            502,
            "Bad gateway",
            "The app did not answer properly. If this keeps happening, check its logs.",
        )

    # ---------------------------------------------------------------- upstream events

    def response_complete(self, up: Upstream) -> None:
        slot = up.slot
        if slot.fails or slot.ejected_until:
            record_success(slot)
        if self.slot_held:
            self.slot_held = False
            slot.outstanding -= 1
        self.up = None
        up.release(up.reusable and self.body_done)
        self.done = True
        self.client.exchange_done(self)  # type: ignore[arg-type]  # (hot path, as above)

    def upstream_lost(self, up: Upstream, exc: Exception | None) -> None:
        """The instance closed before finishing its response."""
        self.up = None
        if up.started:
            self._release_slot()
            self.keep_alive = False
            abort_response(self.client, _exchange(self), "instance closed mid-response")
            return
        if safe_to_retry(True, self.method, self.replayable, up.received):
            self._retry(up.slot, f"closed before answering ({exc})", counts=not up.reused)
            return
        if not up.received and not up.reused:
            ctx = self.client.ctx
            ctx.balancer.failed(up.slot, ctx.clock())
        self._release_slot()
        self._bad_gateway()

    def upstream_broken(self, up: Upstream, why: str) -> None:
        self.up = None
        up.abort()
        self._release_slot()
        log.warning("request %s: %s", self.rid.decode(), why)
        if up.started:
            self.keep_alive = False
            abort_response(self.client, _exchange(self), why)
        else:
            self._bad_gateway()

    def upstream_timeout(self, up: Upstream) -> None:
        self.up = None
        up.abort()
        self._release_slot()
        if up.started:
            self.keep_alive = False
            abort_response(self.client, _exchange(self), "instance went silent mid-response")
        else:
            self.keep_alive = self.keep_alive and self.body_done
            local_error(
                self.client,
                _exchange(self),
                504,
                "Gateway timeout",
                "The app took too long to answer.",
            )

    def start_tunnel(self, up: Upstream, rest: bytes) -> None:
        """101 Switching Protocols: from now on bytes flow through untouched."""
        up.tunnel = True
        up.deadline = 0.0
        self.done = True  # as an exchange; the tunnel lives on in the client connection
        self._release_slot()
        record_success(up.slot)
        if rest:
            self.client.write(rest)
        upgrade.start_tunnel(self.client, _exchange(self), up)

    def tunnel_closed(self) -> None:
        self.client.transport.close()

    def abort(self) -> None:
        """The client went away: stop whatever is in flight."""
        if self.aborted:
            return
        self.aborted = True
        task = self.connect_task
        if task is not None:
            task.cancel()
            self.connect_task = None
        up = self.up
        if up is not None:
            self.up = None
            up.close()
        self._release_slot()
