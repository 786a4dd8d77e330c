"""A new servicehost takes a lost one's place in its pair's PostgreSQL.

Theory of operation. A pair's PostgreSQL is a Patroni cluster (pgpair.py)
whose members know each other only through etcd: a member's configuration
names itself and the etcd members, never its partner, and pg_hba lets the
replication user in from any address. So making a new standby after a
servicehost is lost for good needs no change to the surviving member:

1. `replaced(plan, old, new)` (pure): the pair's plan with NEW in OLD's
   place; the survivor's DATA/pgpair.json is rewritten with it (what
   `admin_url` and the runners' proxy servers are made from) and NEW gets
   its own copy (`for_host`).
2. OLD's member is forgotten (`forget_member`): its key under the pair's
   scope in etcd (`/roost/apps-<pair>/members/<old>`) is deleted, through
   etcd's v3 JSON gateway. Patroni keeps a member key alive only while
   that member renews it (it is bound to the member's lease, ttl seconds),
   so a dead member's key is normally gone already; deleting it makes the
   survivor stop naming OLD at once: its leader drops OLD's replication
   slot (or the WAL kept for OLD would fill its disk) and the synchronous
   standby is chosen among the members that exist. `patronictl remove`
   is not the tool: it removes the whole cluster from etcd. Before that,
   OLD is recorded as retired under the pair's scope
   (`/roost/apps-<pair>/retired/<old>`, `mark_retired`): should it come
   back, its servicehost reads it before starting anything of the pair
   (servicehost/retirement.py) instead of joining the pair again.
3. NEW starts its member (the servicehost runs it from DATA/pgpair.json,
   or `python -m roost.servicehost.pgpair DATA`) with an empty data
   directory: Patroni finds a leader in etcd and bootstraps NEW as its
   replica by `pg_basebackup` from the primary, then it streams, and the
   leader names it the synchronous standby once it has caught up.

Refused, changing nothing, when OLD still answers (its Patroni REST API on
its address): a member that answers is not lost, and two standbys made of
one pair would both claim its place (`OldStillAnswers`).
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import msgspec

from roost import patroni
from roost.servicehost.pgpair import PairError, PairPlan

log = logging.getLogger("roost.servicehost")

ANSWER_TIMEOUT_S = 3.0
ETCD_TIMEOUT_S = 5.0


class OldStillAnswers(PairError):
    """The servicehost to be replaced still answers: it is not lost."""


def replaced(plan: PairPlan, old: str, new: str) -> PairPlan:
    """The pair's plan with `new` in `old`'s place (pure; `host` kept, or
    moved to `new` when it was `old`; `old` among the `lost`, whose
    sentinels the members no longer count). PairError when `old` is not a
    member or `new` already is."""
    if old not in plan.hosts:
        raise PairError(f"{old} is not a servicehost of pair {plan.name} ({', '.join(plan.hosts)})")
    if new in plan.hosts:
        raise PairError(f"{new} is already a servicehost of pair {plan.name}")
    hosts = [new if h == old else h for h in plan.hosts]
    host = new if plan.host == old else plan.host
    lost = sorted((set(plan.lost) | {old}) - {new})  # OLD's sentinel is forgotten too
    return msgspec.structs.replace(plan, hosts=hosts, host=host, lost=lost)


def member_key(plan: PairPlan, member: str) -> str:
    """Where Patroni keeps `member`'s key in etcd (its name is its address)."""
    return f"{patroni.NAMESPACE}{plan.scope}/members/{member}"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def forget_member(plan: PairPlan, member: str) -> int:
    """Delete `member`'s key from the pair's scope in etcd: how many keys
    were deleted (0: it had expired already). OSError when no etcd member
    answers."""
    found = await _etcd(
        plan, "deleterange", {"key": _b64(member_key(plan, member))}, ETCD_TIMEOUT_S
    )
    deleted = int((found.get("deleted", 0) if isinstance(found, dict) else 0) or 0)
    log.info("pair %s: forgot member %s (%d key)", plan.name, member, deleted)
    return deleted


def retired_key(plan: PairPlan, member: str) -> str:
    """Where the pair records that `member` was replaced for good (its
    value: the address of the servicehost that took its place)."""
    return f"{patroni.NAMESPACE}{plan.scope}/retired/{member}"


async def _etcd(plan: PairPlan, path: str, body: dict[str, str], timeout: float) -> Any:
    """One request to the first etcd member that answers (its JSON);
    OSError when none does."""
    import httpx  # pairs only: a servicehost alone never loads it (issue 21)

    errors = []
    async with httpx.AsyncClient(timeout=timeout) as http:
        for host in plan.etcd:
            url = f"http://{patroni.url_host(host)}:{plan.etcd_client_port}/v3/kv/{path}"
            try:
                r = await http.post(url, json=body)
                r.raise_for_status()
                return r.json()
            except (httpx.HTTPError, ValueError) as exc:
                errors.append(f"{host}: {exc}")
    raise OSError(f"no etcd member answered ({'; '.join(errors)})")


async def mark_retired(plan: PairPlan, old: str, new: str) -> None:
    """Record in etcd that `old` was replaced by `new`: should it come back,
    it reads this before running anything of the pair (replaced_by)."""
    await _etcd(
        plan, "put", {"key": _b64(retired_key(plan, old)), "value": _b64(new)}, ETCD_TIMEOUT_S
    )


async def replaced_by(plan: PairPlan, member: str, timeout: float = ANSWER_TIMEOUT_S) -> str:
    """Who replaced `member` in its pair, as etcd records it ("" when no one
    did). OSError when no etcd member answers."""
    found = await _etcd(plan, "range", {"key": _b64(retired_key(plan, member))}, timeout)
    kvs = (found.get("kvs") or []) if isinstance(found, dict) else []
    return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else ""


async def answers(plan: PairPlan, member: str, timeout: float = ANSWER_TIMEOUT_S) -> bool:
    """Whether `member`'s Patroni REST API answers at all (any status)."""
    import httpx

    url = f"http://{patroni.url_host(member)}:{plan.rest_port}/health"
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            await http.get(url)
    except httpx.HTTPError:
        return False
    return True


async def replace_member(plan: PairPlan, old: str, new: str) -> PairPlan:
    """Check and forget: the pair's new plan once OLD is out of it (its key
    deleted). OldStillAnswers or PairError, changing nothing, when OLD
    answers or the hosts cannot make the swap; OSError when etcd does not
    answer (nothing changed either: the key deletion is the one change)."""
    new_plan = replaced(plan, old, new)
    if await answers(plan, old):
        raise OldStillAnswers(
            f"{old} still answers (Patroni on port {plan.rest_port}): a servicehost is "
            "replaced only once it is lost for good; stop it first"
        )
    await mark_retired(plan, old, new)
    await forget_member(plan, old)
    return new_plan
