"""Servicehosts replaced for good, as every controller treats them (issue 16).

Theory of operation. `roost servicehost replace OLD NEW` (or a spare taking a
lost host's place, spare.py) records OLD as retired in the transaction that
gives its place to NEW (store_replace.py, migration 0024). From then on:

- no controller surveys it or sends it anything (servicehosts.ServiceHosts
  skips its endpoints), and its last status push is dropped, so `roost
  servicehost` listings and `services info` no longer show it as a silent
  servicehost for ever;
- every servicehost's status push is answered with the retired addresses
  (`RetiredHosts`), so each one, in the pair or not, stops asking and
  counting their sentinels and has the masters it holds reset
  (servicehost/retirement.py);
- a retired servicehost that comes back is refused: its push is not taken
  (nothing it reports is shown or raised as an event), and the answer tells
  it who replaced it, so it stops serving its old pair's copies instead of
  slipping back into the pair.

Each controller reads the records at most every REFRESH_S (`Retirements`,
over a clock it is given): another controller's replacement reaches it within
that, with no message between controllers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field

from roost.controller.astore import AsyncStore
from roost.controller.servicehosts import ServiceHosts
from roost.controller.store_replace import RetiredRow
from roost.wire.messages import Msg, Ok, RetiredHosts, ServiceHostStatus

log = logging.getLogger("roost.controller")

REFRESH_S = 5.0


def answer(sender: str, rows: Iterable[RetiredRow]) -> Msg:
    """What a servicehost's status push from `sender` (its id, or the host
    of its endpoint) is answered with (pure): Ok when none is retired, else
    the retired addresses, with `replaced_by` when the sender is one."""
    rows = list(rows)
    if not rows:
        return Ok()
    mine = next((r for r in rows if sender in (r.host, r.address)), None)
    return RetiredHosts(
        addresses=sorted({r.address for r in rows}),
        replaced_by=mine.replaced_by if mine is not None else "",
    )


def is_retired(sender: str, rows: Iterable[RetiredRow]) -> bool:
    return any(sender in (r.host, r.address) for r in rows)


def drop_retired(status: MutableMapping[str, ServiceHostStatus], rows: list[RetiredRow]) -> None:
    """Forget the last pushes of retired servicehosts (they are not listed)."""
    for host in [h for h in status if is_retired(h, rows)]:
        del status[host]


@dataclass
class Retirements:
    """The retired servicehosts as this controller last read them."""

    clock: Callable[[], float] = time.monotonic
    rows: list[RetiredRow] = field(default_factory=list)
    _read_at: float | None = None

    def due(self) -> bool:
        return self._read_at is None or self.clock() - self._read_at >= REFRESH_S

    async def refresh(
        self,
        store: AsyncStore,
        hosts: ServiceHosts | None,
        status: MutableMapping[str, ServiceHostStatus],
        force: bool = False,
    ) -> list[RetiredRow]:
        """Read the records again when due (or `force`), and apply them: the
        survey skips them, their last pushes are dropped."""
        if force or self.due():
            self.rows = await store.retired_servicehosts()
            self._read_at = self.clock()
        if hosts is not None:
            hosts.retire(r.address for r in self.rows)
        drop_retired(status, self.rows)
        return self.rows
