"""Image replicas: which images must stay on the hosts holding them, and
which hosts can serve one. Pure (no I/O): the store and the wire adapter
(`image_rpc`) feed them rows and soft state.

Retention rule: an image stays wherever it is replicated while its app still
needs it: the image of the current release, of a pending one, or of one of
the ROLLBACK_IMAGES newest releases that served before (distinct images, so
a run of config changes on one image counts once). Everything else is the
holder's to drop when its store is over its size bound.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from roost.wire.messages import Heartbeat, ImageSource

# Images per app kept for `roost rollback`, besides the current one.
ROLLBACK_IMAGES = 3
# Statuses of releases that served traffic once (rollback targets).
_SERVED = ("active", "superseded")


@dataclass(frozen=True)
class ReleaseImage:
    app_id: int
    version: int
    status: str
    digest: str


def needed_images(
    releases: Iterable[ReleaseImage],
    current: Mapping[int, int | None],
    rollback: int = ROLLBACK_IMAGES,
) -> set[str]:
    """Digests a current, pending or rollback release uses (see the docstring)."""
    by_app: dict[int, list[ReleaseImage]] = {}
    for r in releases:
        by_app.setdefault(r.app_id, []).append(r)
    out: set[str] = set()
    for app_id, rels in by_app.items():
        if app_id not in current:
            continue  # the app is gone (deleted meanwhile)
        older: list[str] = []
        for r in sorted(rels, key=lambda r: r.version, reverse=True):
            if not r.digest:
                continue
            if r.version == current[app_id] or r.status == "pending":
                out.add(r.digest)
            elif r.status in _SERVED and r.digest not in older and len(older) < rollback:
                older.append(r.digest)
        out.update(older)
    return out


def replica_sources(
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
