"""The servicehost's side of `roost servicehost replace OLD NEW` (issue 16).

Two requests, both from a controller (controller/replace.py tells the
whole story):

- `PairReplace` to the pair's surviving servicehost: pgreplace checks that
  OLD is lost (its Patroni does not answer), removes OLD's member from the
  pair's Patroni cluster in etcd, and this host records the pair with NEW
  in OLD's place (DATA/pgpair.json, and what it connects to for apps'
  databases). Its running Patroni needs no change: a member's
  configuration never names its partner. The answer is NEW's plan, with
  the pair's passwords: the controller passes it on and keeps nothing.
- `PairJoin` to NEW: refused by a servicehost in another pair or holding
  any app's service; else it writes DATA/pgpair.json and starts its
  Patroni member (pairdb.PairMember, supervised like its other servers),
  which Patroni bootstraps from the primary by pg_basebackup.

Both are idempotent: a repeat (after a timeout, or of the whole command)
answers as the first did and changes nothing more.
"""

from __future__ import annotations

import logging
import os

import msgspec

from roost.servicehost import pgreplace
from roost.servicehost.host import ServiceError, ServiceHost
from roost.servicehost.pairdb import PairMember
from roost.servicehost.pgpair import PAIR_FILE, PairError, PairPlan, for_host
from roost.servicehost.supervised import Supervised
from roost.wire.dispatch import Entry, on, refusing
from roost.wire.messages import Msg, Ok, PairJoin, PairPlanned, PairReplace

log = logging.getLogger("roost.servicehost")


class PairSwap:
    def __init__(self, host: ServiceHost) -> None:
        self.host = host

    def entries(self) -> list[Entry]:
        errors = (PairError, ServiceError, OSError)
        return [
            on(PairReplace, refusing(self.replace, *errors)),
            on(PairJoin, refusing(self.join, *errors)),
        ]

    def _save(self, plan: PairPlan) -> None:
        path = self.host.layout.data_dir / PAIR_FILE
        tmp = path.with_name(PAIR_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(msgspec.json.format(msgspec.json.encode(plan)))
        os.replace(tmp, path)

    async def replace(self, msg: PairReplace) -> Msg:
        plan = self.host.pg_pair
        if plan is None:
            raise PairError("this servicehost is in no pair")
        if plan.name != msg.pair:
            raise PairError(f"this servicehost is in pair {plan.name}, not {msg.pair}")
        if msg.new in plan.hosts and msg.old not in plan.hosts:
            new_plan = plan  # done before: a repeat
        else:
            new_plan = await pgreplace.replace_member(plan, msg.old, msg.new)
            self._save(new_plan)
            self.host.pg_pair = new_plan
            log.info("pair %s: %s takes %s's place", plan.name, msg.new, msg.old)
        return PairPlanned(plan=msgspec.json.encode(for_host(new_plan, msg.new)))

    async def join(self, msg: PairJoin) -> Msg:
        try:
            plan = msgspec.json.decode(msg.plan, type=PairPlan)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PairError(f"not a pair's plan: {exc}") from None
        if plan.host not in plan.hosts:
            raise PairError(f"the plan of pair {plan.name} names no member of it")
        host = self.host
        if host.pg_pair is not None:
            if host.pg_pair.name == plan.name and host.pg_pair.host == plan.host:
                return Ok(detail=f"already a member of pair {plan.name}")
            raise PairError(f"this servicehost is already in pair {host.pg_pair.name}")
        if host.state.services:
            raise PairError(
                f"this servicehost holds {len(host.state.services)} app service(s): "
                "only one holding none takes a place in a pair"
            )
        if plan.host != host.host:
            raise PairError(f"the plan names {plan.host} as this member; this host is {host.host}")
        self._save(plan)
        host.pg_pair = plan
        member = PairMember(plan, host.layout.data_dir, host.layout.logs)
        host.pair_sup = Supervised(host.sup, member, host.settings.restart_backoff_max_s)
        log.info("pair %s: this servicehost joins it (%s)", plan.name, plan.host)
        return Ok(detail=f"joined pair {plan.name}")
