"""Custom domains and their certificates (private keys sealed at rest)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from roost.controller.secretbox import SecretBox
from roost.controller.store_access import Conflict, NotFound
from roost.controller.store_snapshot import bump_desired
from roost.controller.tls import is_sealed, open_key, seal_key
from roost.state import tables as t


@dataclass(frozen=True)
class CertRow:
    hostname: str
    app_id: int
    cert_pem: str
    key_pem: str  # opened: PEM text (stored sealed)
    not_after: float
    created_at: float


class DomainStore:
    engine: Engine
    secrets: SecretBox | None
    # sealed key -> opened PEM: the reconcile reads every certificate each
    # pass, and a sealed value never changes (a new key is a new token).
    _opened_keys: dict[str, str]

    def add_domain(self, app_id: int, hostname: str) -> None:
        with self.engine.begin() as c:
            row = c.execute(select(t.domains).where(t.domains.c.hostname == hostname)).first()
            if row is not None:
                if row.app_id == app_id:
                    return
                raise Conflict(f"{hostname} is already used by another app")
            c.execute(
                insert(t.domains).values(hostname=hostname, app_id=app_id, created_at=time.time())
            )
            bump_desired(c)

    def remove_domain(self, app_id: int, hostname: str) -> None:
        with self.engine.begin() as c:
            r = c.execute(
                delete(t.domains).where(
                    t.domains.c.app_id == app_id, t.domains.c.hostname == hostname
                )
            )
            bump_desired(c)
        if r.rowcount == 0:
            raise NotFound(f"{hostname} is not a domain of this app")

    def domains(self, app_id: int | None = None) -> list[Any]:
        q = select(t.domains).order_by(t.domains.c.hostname)
        if app_id is not None:
            q = q.where(t.domains.c.app_id == app_id)
        with self.engine.connect() as c:
            return list(c.execute(q))

    def _need_secrets(self) -> SecretBox:
        if self.secrets is None:
            raise RuntimeError("this store has no secrets key: a private key is never stored clear")
        return self.secrets

    def put_certificate(
        self, app_id: int, hostname: str, cert_pem: str, key_pem: str, not_after: float
    ) -> None:
        sealed = seal_key(self._need_secrets(), key_pem)
        with self.engine.begin() as c:
            c.execute(delete(t.certificates).where(t.certificates.c.hostname == hostname))
            c.execute(
                insert(t.certificates).values(
                    hostname=hostname,
                    app_id=app_id,
                    cert_pem=cert_pem,
                    key_pem=sealed,
                    not_after=not_after,
                    created_at=time.time(),
                )
            )
            bump_desired(c)

    def certificates(self, app_id: int | None = None) -> list[CertRow]:
        """Certificates with their private keys opened; a key an older Roost
        stored in clear is sealed in place on the way (when there is a secrets key)."""
        q = select(t.certificates).order_by(t.certificates.c.hostname)
        if app_id is not None:
            q = q.where(t.certificates.c.app_id == app_id)
        with self.engine.connect() as c:
            rows = c.execute(q).all()
        clear = [r for r in rows if not is_sealed(r.key_pem)]
        if clear and self.secrets is not None:
            self._seal_clear_keys([(r.hostname, r.key_pem) for r in clear])
        opened: dict[str, str] = {}
        out = []
        for r in rows:
            key = self._opened_keys.get(r.key_pem) or open_key(self.secrets, r.key_pem)
            if is_sealed(r.key_pem):
                opened[r.key_pem] = key
            out.append(
                CertRow(
                    hostname=r.hostname, app_id=r.app_id, cert_pem=r.cert_pem, key_pem=key,
                    not_after=r.not_after, created_at=r.created_at,
                )
            )  # fmt: skip
        if app_id is None:
            self._opened_keys = opened  # only the keys still stored
        else:
            self._opened_keys.update(opened)
        return out

    def _seal_clear_keys(self, clear: list[tuple[str, str]]) -> None:
        box = self._need_secrets()
        with self.engine.begin() as c:
            if c.dialect.name == "sqlite":
                # The clear key's old bytes are zeroed, not left in a free page
                # (Debian's SQLite is built doing so already; others are not).
                c.exec_driver_sql("PRAGMA secure_delete = ON")
            for hostname, key_pem in clear:
                # Only if still clear: another controller may have sealed it already.
                c.execute(
                    update(t.certificates)
                    .where(t.certificates.c.hostname == hostname)
                    .where(t.certificates.c.key_pem == key_pem)
                    .values(key_pem=seal_key(box, key_pem))
                )
