"""What backupd pulls from this servicehost's pair (roost.servicehost.pgpair).

The apps' databases of a pair live in its Patroni cluster, not in either
servicehost's own PostgreSQL, so backupd backs that cluster up as one
source (`BackupSource.pg_pair`), named after the pair and reaching both
members: libpq connects to whichever takes writes, so the WAL stream, base
backups, dumps and restores follow the primary across a failover.

- The backup role (backuprole.py, the same rights as on the servicehost's
  own PostgreSQL) is made on the pair's primary; the standby has it by
  replication. Both members answer backupd, so its password is one both
  derive from the pair's plan (`backup_password`: a hash of the pair's
  superuser password, which both hold), never one each would set in turn.
- pg_hba admits it for replication (each member's Patroni configuration:
  pgpair.member).
- Its replication slots are Patroni's permanent slots (`slots:` in the
  cluster's dynamic configuration, `declare`), the standard way: Patroni
  drops any slot on the primary it was not told of (backupd's would go the
  first time its receiver reconnects), and makes the permanent ones on the
  new primary as it takes over, so the receiver, started again, streams
  the rest of the old timeline and the new one from the new primary. The
  same PATCH sets max_slot_wal_keep_size, as the servicehost's own
  PostgreSQL has it: a backupd gone for good cannot fill the pair's disks.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from typing import Any

from roost import patroni
from roost.servicehost.pgpair import PairPlan

log = logging.getLogger("roost.servicehost")

SLOT_RE = re.compile(r"[a-z0-9_]{1,63}")
# Two backupds (two locations), each with a slot per pair, and room to spare.
MAX_SLOTS = 8
REST_TIMEOUT_S = 5.0


class PairSlotsRefused(ValueError):
    """Slot names that cannot be declared (the message says why)."""


def backup_password(plan: PairPlan) -> str:
    """The pair's backup role's password: the same on both members (pure)."""
    seed = f"roost-backup\0{plan.name}\0{plan.superuser_password}".encode()
    return hashlib.sha256(seed).hexdigest()[:32]


def check_slots(slots: Sequence[str]) -> list[str]:
    """The slot names asked for, checked (PairSlotsRefused) and sorted (pure)."""
    bad = [s for s in slots if not SLOT_RE.fullmatch(s)]
    if bad:
        raise PairSlotsRefused(f"not replication slot names: {bad[:3]}")
    if len(set(slots)) > MAX_SLOTS:
        raise PairSlotsRefused(f"{len(set(slots))} slots asked for, at most {MAX_SLOTS}")
    return sorted(set(slots))


def patch_for(config: dict[str, Any], slots: Sequence[str], keep_mb: int) -> dict[str, Any]:
    """What to PATCH into Patroni's dynamic configuration (`config`, its
    `GET /config`) so `slots` are permanent physical slots and the slots'
    WAL is capped at `keep_mb`; {} when it says so already (pure). Slots
    declared before stay: another backupd may stream through them."""
    have = config.get("slots") or {}
    patch: dict[str, Any] = {}
    missing = {s: {"type": "physical"} for s in slots if s not in have}
    if missing:
        patch["slots"] = missing
    keep = f"{keep_mb}MB"
    params = (config.get("postgresql") or {}).get("parameters") or {}
    if params.get("max_slot_wal_keep_size") != keep:
        patch["postgresql"] = {"parameters": {"max_slot_wal_keep_size": keep}}
    return patch


async def declare(plan: PairPlan, slots: Sequence[str], keep_mb: int) -> None:
    """Make `slots` permanent in the pair's Patroni (through the first member
    whose REST API answers: the configuration lives in etcd)."""
    import httpx  # pairs only: a servicehost alone never loads it (issue 21)

    auth = (patroni.REST_USER, plan.rest_password)
    errors = []
    async with httpx.AsyncClient(timeout=REST_TIMEOUT_S, auth=auth) as http:
        for h in plan.hosts:
            url = f"http://{patroni.url_host(patroni.bare(h))}:{plan.rest_port}/config"
            try:
                got = await http.get(url)
                got.raise_for_status()
                patch = patch_for(got.json(), slots, keep_mb)
                if patch:
                    (await http.patch(url, json=patch)).raise_for_status()
                    log.info("pair %s: Patroni's configuration now holds %s", plan.name, patch)
                return
            except (httpx.HTTPError, ValueError) as exc:
                errors.append(f"{h}: {exc}")
    raise OSError(f"no member of pair {plan.name} took its backup slots: {'; '.join(errors)}")
