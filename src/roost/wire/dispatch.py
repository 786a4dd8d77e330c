"""A role's {message type: handler} table: the one list of what it serves.

Each role that serves requests builds one `Handlers` from `on(Type, handler)`
entries (a role made of parts, such as exec sessions or the controller's
gateway answers, adds the parts' entries to its own) and gives it to its
RpcServer. Dispatch is by the message's exact class, so the table is
everything the role answers: a message missing from it gets an Error naming
the role, never a guess. `on` ties each handler's parameter to its key for
mypy; `at_once` makes an entry for a request answered from memory (a plain
function, that the RPC server calls as it reads the request).
`tests/wire/test_flows.py` checks each role's table against who may send
what (`roost.wire.authz`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from roost.wire.messages import Error, Msg, Ok, Ping

M = TypeVar("M", bound=Msg)


@dataclass(frozen=True)
class Entry:
    """One row of a table: a message type and what answers it (`now`: the
    same answer as a plain function, for an entry made by `at_once`)."""

    kind: type[Msg]
    handler: Callable[[Any], Awaitable[Msg]]
    now: Callable[[Any], Msg] | None = None


def on(kind: type[M], handler: Callable[[M], Awaitable[Msg]]) -> Entry:
    return Entry(kind, handler)


def at_once(kind: type[M], answer: Callable[[M], Msg]) -> Entry:
    """A request answered from memory, waiting for nothing (a heartbeat): the
    RPC server answers it as it reads it, without a task of its own."""

    async def handler(msg: M) -> Msg:
        return answer(msg)

    return Entry(kind, handler, answer)


def pong(detail: str) -> Entry:
    """Ping, answered Ok(detail): every serving role's liveness check."""

    async def answer(_msg: Ping) -> Msg:
        return Ok(detail=detail)

    return on(Ping, answer)


def refusing(
    handler: Callable[[M], Awaitable[Msg]], *errors: type[Exception]
) -> Callable[[M], Awaitable[Msg]]:
    """`handler`, answering any of `errors` with an Error of its message (and
    its `retryable`, when it has one): refusals a part of a role raises."""

    async def answer(msg: M) -> Msg:
        try:
            return await handler(msg)
        except errors as exc:
            return Error(message=str(exc), retryable=bool(getattr(exc, "retryable", False)))

    return answer


class Handlers:
    """Answers a message by its type's entry; `who` names the role in refusals."""

    def __init__(self, who: str, entries: Iterable[Entry]) -> None:
        self.who = who
        self.table: dict[type[Msg], Callable[[Any], Awaitable[Msg]]] = {}
        self._now: dict[type[Msg], Callable[[Any], Msg]] = {}
        for e in entries:
            if e.kind in self.table:
                raise ValueError(f"{who} has two handlers for {e.kind.__name__}")
            self.table[e.kind] = e.handler
            if e.now is not None:
                self._now[e.kind] = e.now

    @property
    def kinds(self) -> frozenset[type[Msg]]:
        return frozenset(self.table)

    def answer_now(self, msg: Msg) -> Msg | None:
        """The answer of an `at_once` entry; None for any other message."""
        now = self._now.get(type(msg))
        return None if now is None else now(msg)

    async def __call__(self, msg: Msg) -> Msg:
        handler = self.table.get(type(msg))
        if handler is None:
            return Error(message=f"{self.who} does not handle {type(msg).__name__}")
        return await handler(msg)
