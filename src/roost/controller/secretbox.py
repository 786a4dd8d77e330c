"""Encrypting service credentials at rest in the state database.

The key is derived (HKDF-SHA256) from the controller's CURVE secret key: in a
cluster every controller holds the same cluster key, so every replica can
read what another wrote, and a copy of the database alone reveals nothing.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SecretError(Exception):
    pass


class SecretBox:
    def __init__(self, key_material: bytes) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"roost-state-secrets", info=b"v1"
        ).derive(key_material)
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, value: Any) -> str:
        return self._fernet.encrypt(msgspec.json.encode(value)).decode("ascii")

    def open(self, token: str) -> Any:
        try:
            return msgspec.json.decode(self._fernet.decrypt(token.encode("ascii")))
        except (InvalidToken, msgspec.DecodeError) as exc:
            raise SecretError("stored secret cannot be decrypted with this cluster's key") from exc
