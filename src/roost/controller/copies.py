"""Image copies: which images must stay on the hosts holding them, and
which hosts can serve one. Pure (no I/O): the store and the wire adapter
(`image_rpc`) feed them rows and soft state.

Retention rule: an image stays wherever it is copied while its app still
needs it: the image of the current release, of a pending one, or of one of
the newest releases that served, KEEP_RELEASES distinct images in all with
the current one (ROOST_KEEP_RELEASES; distinct, so a run of config changes
on one image counts once): what `roost rollback` and the automatic rollback
(aftercare.py) go back to. Everything else is the holder's to drop: a
runner when its copy store is over its size bound, a builder at once
(builder/storegc.py). A release's static bundle (served by routers) is kept
exactly as long as its image.

Replacing lost copies (`plan_copies`, `note_copy`): the scheduler lease holder
checks every few seconds that each image and bundle retention keeps has at
least one recorded holder alive; for one that has none (the holder's host
died), it asks another live runner to pull a copy. Failed asks back off per
digest (doubling, capped), and a host that failed for a digest is not asked
for it again until every other live host failed too.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from roost.proc.backoff import Backoff
from roost.wire.messages import Heartbeat, ImageSource

# Images per app kept, the current release's included (rollback targets).
KEEP_RELEASES = 5
# Statuses of releases that served traffic once (rollback targets).
_SERVED = ("active", "superseded")
# Backoff per digest of asks for a new copy: first retry after 2 s,
# doubling up to a minute.
COPY_BACKOFF = Backoff(base_s=2.0, max_s=60.0)


@dataclass(frozen=True)
class ReleaseImage:
    app_id: int
    version: int
    status: str
    digest: str
    static: str = ""  # the release's static bundle ("" when it has none)


def needed_images(
    releases: Iterable[ReleaseImage],
    current: Mapping[int, int | None],
    keep: int = KEEP_RELEASES,
) -> set[str]:
    """Digests a current, pending or rollback release uses (see the docstring)."""
    by_app: dict[int, list[ReleaseImage]] = {}
    for r in releases:
        by_app.setdefault(r.app_id, []).append(r)
    out: set[str] = set()
    for app_id, rels in by_app.items():
        if app_id not in current:
            continue  # the app is gone (deleted meanwhile)
        served: list[str] = []  # distinct images of releases that served, newest first
        for r in sorted(rels, key=lambda r: r.version, reverse=True):
            if not r.digest:
                continue
            if r.version == current[app_id] or r.status == "pending":
                out.add(r.digest)
                if r.static:
                    out.add(r.static)
                if r.version == current[app_id] and r.digest not in served:
                    served.append(r.digest)
            elif r.status in _SERVED and r.digest not in served and len(served) < keep:
                served.append(r.digest)
                if r.static:
                    out.add(r.static)
        out.update(served)
    return out


def copy_sources(
    holders: Iterable[str],
    alive: Mapping[str, Heartbeat],
    asker: str,
    rng: random.Random | None = None,
) -> list[ImageSource]:
    """Live holders that serve RPC, but the asker, in random order (load spread)."""
    out = [
        ImageSource(host_id=h, endpoint=alive[h].rpc_endpoint, key=alive[h].rpc_key)
        for h in holders
        if h != asker and h in alive and alive[h].rpc_endpoint and alive[h].rpc_key
    ]
    (rng or random).shuffle(out)
    return out


@dataclass(frozen=True)
class CopyAttempts:
    """Failed asks for a copy of one digest: when to try again, and whom not to ask."""

    failures: int = 0
    next_at: float = 0.0
    failed_hosts: frozenset[str] = field(default_factory=frozenset)


def plan_copies(
    needed: Iterable[str],
    holders: Mapping[str, Iterable[str]],
    alive: Iterable[str],
    attempts: Mapping[str, CopyAttempts],
    now: float,
    rng: random.Random | None = None,
    limit: int | None = None,
) -> list[tuple[str, str]]:
    """(digest, host) asks: one per needed digest no live host holds, the
    first `limit` of them (by digest) when given.

    `holders` are the recorded holders of each digest, `alive` the live
    runners that serve RPC. A digest still backing off is left for later; a
    host that failed for a digest is passed over while another is left.
    Cost: a set test per needed digest, and a walk over the live hosts per
    ask only (thousands of digests without a live holder stay cheap).
    """
    live = sorted(set(alive))
    if not live:
        return []  # nobody to ask
    live_set = set(live)
    r = rng or random
    out: list[tuple[str, str]] = []
    for digest in sorted(set(needed)):
        if limit is not None and len(out) >= limit:
            break
        held = set(holders.get(digest, ()))
        if not held.isdisjoint(live_set):
            continue
        tried = attempts.get(digest, CopyAttempts())
        if tried.next_at > now:
            continue
        fresh = [h for h in live if h not in held and h not in tried.failed_hosts]
        if not fresh:  # every live host failed once: start over with all of them
            fresh = [h for h in live if h not in held]
        if fresh:
            out.append((digest, r.choice(fresh)))
    return out


def note_copy(
    attempts: Mapping[str, CopyAttempts], digest: str, host: str, ok: bool, now: float
) -> dict[str, CopyAttempts]:
    """The attempts after an ask of `host` for `digest` succeeded or failed."""
    out = dict(attempts)
    if ok:
        out.pop(digest, None)
        return out
    prev = out.get(digest, CopyAttempts())
    failures = prev.failures + 1
    failed = prev.failed_hosts | {host}
    out[digest] = replace(
        prev,
        failures=failures,
        next_at=now + COPY_BACKOFF.delay(failures),
        failed_hosts=failed,
    )
    return out
