"""Image copies: which hosts confirmed a verified copy of which image or static bundle."""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from roost.controller.copies import ReleaseImage
from roost.state import tables as t


class ImageCopyStore:
    engine: Engine

    def add_copy(self, digest: str, host_id: str) -> None:
        """Record that `host_id` holds `digest` (idempotent)."""
        try:
            with self.engine.begin() as c:
                c.execute(
                    insert(t.image_copies).values(
                        digest=digest, host_id=host_id, created_at=time.time()
                    )
                )
        except IntegrityError:
            pass  # already recorded: a second confirmation of the same copy

    def copy_hosts(self, digest: str) -> list[str]:
        with self.engine.connect() as c:
            rows = c.execute(
                select(t.image_copies.c.host_id).where(t.image_copies.c.digest == digest)
            )
            return sorted(r.host_id for r in rows)

    def all_copies(self) -> dict[str, set[str]]:
        """Every recorded copy: digest -> the hosts holding it."""
        out: dict[str, set[str]] = {}
        with self.engine.connect() as c:
            for r in c.execute(select(t.image_copies.c.digest, t.image_copies.c.host_id)):
                out.setdefault(r.digest, set()).add(r.host_id)
        return out

    def host_copies(self, host_id: str) -> set[str]:
        with self.engine.connect() as c:
            rows = c.execute(
                select(t.image_copies.c.digest).where(t.image_copies.c.host_id == host_id)
            )
            return {r.digest for r in rows}

    def forget_copies(self, host_id: str, digests: Iterable[str]) -> None:
        gone = list(digests)
        if not gone:
            return
        with self.engine.begin() as c:
            c.execute(
                delete(t.image_copies).where(
                    t.image_copies.c.host_id == host_id, t.image_copies.c.digest.in_(gone)
                )
            )

    def release_images(self) -> tuple[list[ReleaseImage], dict[int, int | None]]:
        """Every release's image and status, and each app's current release."""
        with self.engine.connect() as c:
            rels = [
                ReleaseImage(r.app_id, r.version, r.status, r.image_digest, r.static_digest)
                for r in c.execute(
                    select(
                        t.releases.c.app_id,
                        t.releases.c.version,
                        t.releases.c.status,
                        t.releases.c.image_digest,
                        t.releases.c.static_digest,
                    )
                )
            ]
            current = {
                r.id: r.current_release
                for r in c.execute(select(t.apps.c.id, t.apps.c.current_release))
            }
        return rels, current
