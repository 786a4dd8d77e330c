"""Who may do what: accounts, passwords, tokens, SSH keys, collaborators."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from roost.state import tables as t

# argon2id with the library's defaults: deliberately slow to compute.
_hasher = PasswordHasher()


class Conflict(Exception):
    pass


class NotFound(Exception):
    pass


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ssh_fingerprint(public_key: str) -> str:
    """OpenSSH's SHA256 fingerprint of an `ssh-xxx BASE64 [comment]` line."""
    parts = public_key.strip().split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise ValueError("not an OpenSSH public key line ('ssh-ed25519 AAAA... comment')")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise ValueError("the key's base64 part is malformed") from None
    if len(blob) < 20 or not blob[4:].startswith(parts[0].encode()):
        raise ValueError("the key's type and body do not match")
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def hash_password(password: str) -> str:
    """argon2id: CPU and memory on purpose; run it off the event loop."""
    return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    """True when `password` matches the stored hash; costs the same when
    there is none ("": an account without a password), so timing tells nothing."""
    try:
        if not stored:
            _hasher.verify(_DUMMY_HASH, password + "x")  # equalise timing
            return False
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
    return True


class AccessStore:
    engine: Engine

    # ------------------------------------------------------------ accounts

    def create_account(
        self, email: str, password: str | None = None, is_admin: bool = False
    ) -> int:
        return self.create_account_hashed(
            email, hash_password(password) if password else "", is_admin
        )

    def create_account_hashed(
        self, email: str, password_hash: str = "", is_admin: bool = False
    ) -> int:
        """A new account; `password_hash` from `hash_password` ("": none, token or key only).

        Conflict when the address is taken, also when another transaction
        takes it between the look and the insert (three controllers of a
        new cluster making the admin account at once: the unique index
        answers for the loser)."""
        taken = Conflict(f"account {email} already exists")
        try:
            with self.engine.begin() as c:
                if c.execute(select(t.accounts.c.id).where(t.accounts.c.email == email)).first():
                    raise taken
                r = c.execute(
                    insert(t.accounts).values(
                        email=email,
                        password_hash=password_hash,
                        is_admin=is_admin,
                        created_at=time.time(),
                    )
                )
                return int(r.inserted_primary_key[0])  # type: ignore[index]
        except IntegrityError as exc:
            raise taken from exc

    def account_by_email(self, email: str) -> Any:
        with self.engine.connect() as c:
            return c.execute(select(t.accounts).where(t.accounts.c.email == email)).first()

    def account_by_id(self, account_id: int) -> Any:
        with self.engine.connect() as c:
            return c.execute(select(t.accounts).where(t.accounts.c.id == account_id)).first()

    def set_password(self, account_id: int, password: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                update(t.accounts)
                .where(t.accounts.c.id == account_id)
                .values(password_hash=hash_password(password))
            )

    # ------------------------------------------------------------ tokens

    def issue_token(self, account_id: int, name: str = "", expires_at: float | None = None) -> str:
        """A new token; it stops working at `expires_at` (epoch seconds), if given."""
        token = "rst_" + secrets.token_urlsafe(32)
        with self.engine.begin() as c:
            c.execute(
                insert(t.tokens).values(
                    account_id=account_id,
                    token_hash=hash_token(token),
                    name=name,
                    created_at=time.time(),
                    expires_at=expires_at,
                )
            )
        return token

    def account_for_token(self, token: str) -> Any:
        """The token's account while the token is neither revoked nor expired."""
        with self.engine.connect() as c:
            return c.execute(
                select(t.accounts)
                .join(t.tokens, t.tokens.c.account_id == t.accounts.c.id)
                .where(
                    t.tokens.c.token_hash == hash_token(token),
                    t.tokens.c.revoked_at.is_(None),
                    or_(t.tokens.c.expires_at.is_(None), t.tokens.c.expires_at > time.time()),
                )
            ).first()

    def token_expired(self, token: str) -> bool:
        """True for a token that exists, is not revoked, and is past its expiry."""
        with self.engine.connect() as c:
            row = c.execute(
                select(t.tokens.c.expires_at).where(
                    t.tokens.c.token_hash == hash_token(token), t.tokens.c.revoked_at.is_(None)
                )
            ).first()
        return row is not None and row.expires_at is not None and row.expires_at <= time.time()

    def tokens(self, account_id: int) -> list[Any]:
        with self.engine.connect() as c:
            return list(
                c.execute(
                    select(
                        t.tokens.c.id,
                        t.tokens.c.name,
                        t.tokens.c.created_at,
                        t.tokens.c.revoked_at,
                        t.tokens.c.expires_at,
                    )
                    .where(t.tokens.c.account_id == account_id)
                    .order_by(t.tokens.c.id)
                )
            )

    def revoke_token(self, account_id: int, token_id: int) -> None:
        with self.engine.begin() as c:
            r = c.execute(
                update(t.tokens)
                .where(
                    t.tokens.c.id == token_id,
                    t.tokens.c.account_id == account_id,
                    t.tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=time.time())
            )
        if r.rowcount == 0:
            raise NotFound(f"no active token {token_id}")

    # ------------------------------------------------------------ SSH keys

    def add_ssh_key(self, account_id: int, public_key: str, name: str = "") -> str:
        fp = ssh_fingerprint(public_key)
        line = " ".join(public_key.strip().split()[:2])
        comment = name or " ".join(public_key.strip().split()[2:])
        with self.engine.begin() as c:
            existing = c.execute(select(t.ssh_keys).where(t.ssh_keys.c.fingerprint == fp)).first()
            if existing is not None:
                if existing.account_id == account_id:
                    return fp
                raise Conflict("that key belongs to another account")
            c.execute(
                insert(t.ssh_keys).values(
                    account_id=account_id,
                    fingerprint=fp,
                    public_key=line,
                    name=comment,
                    created_at=time.time(),
                )
            )
        return fp

    def ssh_keys(self, account_id: int | None = None) -> list[Any]:
        q = select(t.ssh_keys).order_by(t.ssh_keys.c.id)
        if account_id is not None:
            q = q.where(t.ssh_keys.c.account_id == account_id)
        with self.engine.connect() as c:
            return list(c.execute(q))

    def remove_ssh_key(self, account_id: int, fingerprint: str) -> None:
        with self.engine.begin() as c:
            r = c.execute(
                delete(t.ssh_keys).where(
                    t.ssh_keys.c.account_id == account_id, t.ssh_keys.c.fingerprint == fingerprint
                )
            )
        if r.rowcount == 0:
            raise NotFound(f"no key {fingerprint}")

    def account_for_ssh_key(self, fingerprint: str) -> Any:
        with self.engine.connect() as c:
            return c.execute(
                select(t.accounts)
                .join(t.ssh_keys, t.ssh_keys.c.account_id == t.accounts.c.id)
                .where(t.ssh_keys.c.fingerprint == fingerprint)
            ).first()

    # ------------------------------------------------------------ collaborators

    def add_collaborator(self, app_id: int, account_id: int) -> None:
        with self.engine.begin() as c:
            exists = c.execute(
                select(t.collaborators).where(
                    t.collaborators.c.app_id == app_id, t.collaborators.c.account_id == account_id
                )
            ).first()
            if exists is None:
                c.execute(insert(t.collaborators).values(app_id=app_id, account_id=account_id))

    def remove_collaborator(self, app_id: int, account_id: int) -> None:
        with self.engine.begin() as c:
            c.execute(
                delete(t.collaborators).where(
                    t.collaborators.c.app_id == app_id, t.collaborators.c.account_id == account_id
                )
            )

    def collaborators(self, app_id: int) -> list[str]:
        with self.engine.connect() as c:
            rows = c.execute(
                select(t.accounts.c.email)
                .join(t.collaborators, t.collaborators.c.account_id == t.accounts.c.id)
                .where(t.collaborators.c.app_id == app_id)
                .order_by(t.accounts.c.email)
            )
            return [r.email for r in rows]

    def apps_visible_to(self, account_id: int) -> set[int]:
        with self.engine.connect() as c:
            owned = c.execute(select(t.apps.c.id).where(t.apps.c.owner_id == account_id))
            shared = c.execute(
                select(t.collaborators.c.app_id).where(t.collaborators.c.account_id == account_id)
            )
            return {r[0] for r in owned} | {r[0] for r in shared}


# What verify_password checks against when an account has no password: a
# hash of a random secret nobody kept, with _hasher's parameters (verifying
# costs what the parameters say, whatever was hashed). Written out, not
# hashed at import: a hash is ~0.2 s of CPU and 64 MiB touched, paid by
# every process importing this (each controller's start, on its way to
# serving); made afresh only should the library's defaults change.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$JebXSmFI9HdfOjIg6EKp5A"
    "$kmPBEuudWC7D4Wdxu5nf2OEtdoyu7IQl126LsuTjBbw"
)
if _hasher.check_needs_rehash(_DUMMY_HASH):
    _DUMMY_HASH = _hasher.hash(secrets.token_hex(8))
