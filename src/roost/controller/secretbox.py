"""Encrypting service credentials at rest in the state database.

The key is its own random secret, `DATA/keys/fernet.key` (mode 0600), held by
controllers only: `roost up` makes it, `roost cluster init` puts the same one
in every controller's bundle (so every replica reads what another wrote), and
a copy of the database alone reveals nothing. It is not derived from a CURVE
key: a host's CURVE keys say who it is on the wire and can be replaced without
touching stored secrets.

The file holds one Fernet key per line, newest first. New secrets are always
sealed with the first; the others only open what they once sealed. Roost
before this file derived its key (HKDF-SHA256) from the controller's CURVE
secret; when a data directory that has such secrets gets its fernet.key, that
derived key is written as the second line (`legacy_key`), so old ciphertext
still opens, and every secret written from then on uses the new key (they are
re-encrypted as they are written; nothing rewrites old rows in place).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from roost.privatefile import made_once, replace_private

# cryptography is imported where a key is used, not here: `roost up` makes
# and checks the key file (ensure_key_file) and keeps what it imports for the
# platform's life (1.7 MB; issue 21). A key is checked by its length.
if TYPE_CHECKING:
    from cryptography.fernet import Fernet

FERNET_FILE = "fernet.key"


class SecretError(Exception):
    pass


def _fernet(key: bytes) -> Fernet:
    from cryptography.fernet import Fernet

    return Fernet(base64.urlsafe_b64encode(_raw(key)))


def _raw(key: bytes) -> bytes:
    # 32 raw bytes, or their urlsafe base64 (a Fernet key as written in fernet.key).
    raw = key
    if len(key) != 32:
        try:
            raw = base64.urlsafe_b64decode(key)
        except (binascii.Error, ValueError):
            raw = b""
    if len(raw) != 32:
        raise SecretError("a secrets key is 32 bytes (or their urlsafe base64)")
    return raw


class SecretBox:
    """Seal with `primary`; open what `primary` or any of `older` sealed."""

    def __init__(self, primary: bytes, *older: bytes) -> None:
        from cryptography.fernet import MultiFernet

        self._fernet = MultiFernet([_fernet(k) for k in (primary, *older)])

    @classmethod
    def from_file(cls, path: Path) -> SecretBox:
        keys = read_keys(path)
        return cls(keys[0], *keys[1:])

    def seal(self, value: Any) -> str:
        return self._fernet.encrypt(msgspec.json.encode(value)).decode("ascii")

    def open(self, token: str) -> Any:
        from cryptography.fernet import InvalidToken

        try:
            return msgspec.json.decode(self._fernet.decrypt(token.encode("ascii")))
        except (InvalidToken, msgspec.DecodeError) as exc:
            raise SecretError("stored secret cannot be decrypted with this cluster's key") from exc


def new_key() -> bytes:
    # As Fernet.generate_key: 32 random bytes, urlsafe base64.
    return base64.urlsafe_b64encode(os.urandom(32))


def legacy_key(curve_secret: bytes) -> bytes:
    """The key older Roost derived from a controller's CURVE secret (z85)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"roost-state-secrets", info=b"v1"
    ).derive(curve_secret)
    return base64.urlsafe_b64encode(derived)


def read_keys(path: Path) -> list[bytes]:
    try:
        keys = path.read_bytes().split()
    except FileNotFoundError:
        raise SecretError(
            f"{path} is missing: controllers need the cluster's secrets key "
            "(made by 'roost up', or in a controller's bundle from 'roost cluster init')"
        ) from None
    if not keys:
        raise SecretError(f"{path} holds no key")
    for k in keys:
        _raw(k)  # a clear error now rather than on the first secret
    return keys


def write_keys(path: Path, keys: list[bytes]) -> None:
    """Write fernet.key (0600 from the start: it is never readable by others)."""
    for k in keys:
        _raw(k)
    replace_private(path, b"".join(k + b"\n" for k in keys))


def ensure_key_file(path: Path, legacy_secret: bytes | None = None) -> list[bytes]:
    """The keys in `path`, made once: a new random key, then (when this data
    directory's secrets were sealed the old way) the key derived from
    `legacy_secret`, the controller's CURVE secret they were sealed with."""
    with made_once(path.parent):
        if path.exists():
            return read_keys(path)
        keys = [new_key()]
        if legacy_secret is not None:
            keys.append(legacy_key(legacy_secret))
        write_keys(path, keys)
        return keys
