"""The state database's secrets key is its own secret, not a CURVE key's child.

`roost up` (cli/local.prepare_cluster) makes DATA/keys/fernet.key; the
controller daemon opens its SecretBox from that file. Secrets sealed the old
way (a key derived from the controller's CURVE secret) must still open, also
after the CURVE key changes.
"""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from roost.cli.local import prepare_cluster
from roost.controller.secretbox import (
    FERNET_FILE,
    SecretBox,
    SecretError,
    legacy_key,
    read_keys,
)
from roost.wire.keys import load_keypair

CREDS = {"url": "postgresql://app:s3cret@db/app", "password": "s3cret"}


def _old_seal(curve_secret: bytes, value: bytes) -> str:
    """What Roost sealed with before fernet.key: HKDF of the controller's CURVE secret."""
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"roost-state-secrets", info=b"v1"
    ).derive(curve_secret)
    return Fernet(base64.urlsafe_b64encode(derived)).encrypt(value).decode()


def _replace_curve_key(data: Path) -> None:
    for suffix in ("key", "key_secret"):
        (data / "keys" / f"controller.{suffix}").unlink()
    prepare_cluster(data, "127.0.0.1")


def test_a_fresh_data_dir_gets_a_random_private_key(tmp_path: Path) -> None:
    prepare_cluster(tmp_path, "127.0.0.1")
    path = tmp_path / "keys" / FERNET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = read_keys(path)
    curve = load_keypair(tmp_path / "keys", "controller").secret
    assert len(keys) == 1 and keys[0] != legacy_key(curve)  # nothing to stay compatible with


def test_changing_the_curve_key_leaves_the_secrets_key_alone(tmp_path: Path) -> None:
    prepare_cluster(tmp_path, "127.0.0.1")
    path = tmp_path / "keys" / FERNET_FILE
    before = path.read_bytes()
    sealed = SecretBox.from_file(path).seal(CREDS)
    old_curve = load_keypair(tmp_path / "keys", "controller").secret
    _replace_curve_key(tmp_path)
    assert load_keypair(tmp_path / "keys", "controller").secret != old_curve
    assert path.read_bytes() == before
    assert SecretBox.from_file(path).open(sealed) == CREDS


def test_secrets_sealed_the_old_way_still_open(tmp_path: Path) -> None:
    # A data directory of the older version: a controller key, secrets sealed
    # with the key derived from it, and no fernet.key.
    prepare_cluster(tmp_path, "127.0.0.1")
    path = tmp_path / "keys" / FERNET_FILE
    path.unlink()
    curve = load_keypair(tmp_path / "keys", "controller").secret
    old = _old_seal(curve, b'{"password":"s3cret"}')
    prepare_cluster(tmp_path, "127.0.0.1")  # the upgrade: `roost up` once more
    box = SecretBox.from_file(path)
    assert box.open(old) == {"password": "s3cret"}
    # New secrets use the new key, which is not the derived one...
    new = box.seal(CREDS)
    with pytest.raises(InvalidToken):
        Fernet(legacy_key(curve)).decrypt(new.encode())
    # ...and both still open once the CURVE key is replaced.
    _replace_curve_key(tmp_path)
    box = SecretBox.from_file(path)
    assert box.open(old) == {"password": "s3cret"} and box.open(new) == CREDS


def test_a_missing_or_bad_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match=r"fernet\.key is missing"):
        SecretBox.from_file(tmp_path / FERNET_FILE)
    (tmp_path / FERNET_FILE).write_bytes(b"not-a-key\n")
    with pytest.raises(SecretError, match="32 bytes"):
        SecretBox.from_file(tmp_path / FERNET_FILE)
