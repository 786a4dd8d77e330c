"""CURVE keypairs: generation and storage (z85 text, secret files mode 0600)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq


@dataclass(frozen=True)
class KeyPair:
    public: bytes  # z85, 40 bytes
    secret: bytes  # z85, 40 bytes

    @property
    def public_text(self) -> str:
        return self.public.decode("ascii")


def generate_keypair() -> KeyPair:
    public, secret = zmq.curve_keypair()
    return KeyPair(public=public, secret=secret)


def write_keypair(directory: Path, name: str, pair: KeyPair) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.key").write_bytes(pair.public + b"\n")
    secret_path = directory / f"{name}.key_secret"
    # Create with 0600 from the start so the secret is never world-readable.
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pair.public + b"\n" + pair.secret + b"\n")


def load_keypair(directory: Path, name: str) -> KeyPair:
    lines = (directory / f"{name}.key_secret").read_bytes().split()
    if len(lines) != 2 or any(len(x) != 40 for x in lines):
        raise ValueError(f"malformed key file {directory / (name + '.key_secret')}")
    return KeyPair(public=lines[0], secret=lines[1])


def ensure_keypair(directory: Path, name: str) -> KeyPair:
    try:
        return load_keypair(directory, name)
    except FileNotFoundError:
        pair = generate_keypair()
        write_keypair(directory, name, pair)
        return pair


def load_public_keys(directory: Path) -> set[bytes]:
    """Every public key in `directory` (the cluster's known keys)."""
    keys: set[bytes] = set()
    for path in sorted(directory.glob("*.key")):
        data = path.read_bytes().strip()
        if len(data) == 40:
            keys.add(data)
    return keys
