"""Who a CURVE key belongs to: one role on one host.

Every key a daemon admits is listed in `DATA/keys/peers.json` with the role it
plays and the host it lives on; a key that is not listed is not admitted. The
ZAP handler (`roost.wire.node`) gives libzmq the identity as the connection's
User-Id, "role:host", so every message received on that connection carries it,
and the RPC server (`roost.wire.rpc`) checks the sender's role and claims
(`roost.wire.authz`) before any handler runs.

Each (host, role) has its own keypair: a host holds only its own secret keys,
so a runner (a host that runs tenants' code) can speak only as that runner.
`roost up` writes one identity per role for the one machine (`cli/local.py`);
`roost cluster init` one per (host, role) named on its command line
(`cli/cluster.py`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import msgspec
from zmq.utils import z85

from roost.wire.keys import KeyPair, ensure_keypair

ROLES = ("controller", "builder", "runner", "router", "servicehost", "gateway", "backupd")
PEERS_FILE = "peers.json"
# A host is a name or an address ("10.0.0.5", "[fd00::5]", "web-1"): it ends up
# in log lines, a ZAP User-Id and (for a runner) the host id.
_HOST = re.compile(r"[A-Za-z0-9._:\[\]-]{1,100}")


class PeerError(ValueError):
    """A peers.json (or an identity) that cannot be trusted as written."""


class Identity(msgspec.Struct, frozen=True):
    role: str
    host: str

    @property
    def user_id(self) -> str:
        return f"{self.role}:{self.host}"

    def __str__(self) -> str:
        return self.user_id


def identity(role: str, host: str) -> Identity:
    """A checked Identity: a known role and a plain host name."""
    if role not in ROLES:
        raise PeerError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    if not _HOST.fullmatch(host) or host in (".", ".."):
        raise PeerError(f"bad host name {host!r}")
    return Identity(role, host)


class _Peer(msgspec.Struct, frozen=True, kw_only=True):
    key: str  # z85 public key
    role: str
    host: str


class _Peers(msgspec.Struct, kw_only=True):
    peers: list[_Peer] = []


def check_peers(peers: Mapping[bytes, Identity]) -> dict[bytes, Identity]:
    """The map itself, once every key is a CURVE key and every identity is
    someone else's than any other key's (a User-Id must name one key)."""
    seen: dict[Identity, bytes] = {}
    out: dict[bytes, Identity] = {}
    for key, who in peers.items():
        if len(key) != 40:
            raise PeerError(f"{who}: not a z85 CURVE public key")
        try:
            z85.decode(key)
        except (ValueError, KeyError):
            raise PeerError(f"{who}: not a z85 CURVE public key") from None
        checked = identity(who.role, who.host)
        if checked in seen:
            raise PeerError(f"two keys claim to be {checked}")
        seen[checked] = key
        out[key] = checked
    return out


def parse_peers(raw: bytes, source: str = PEERS_FILE) -> dict[bytes, Identity]:
    """public key (z85) -> identity, from the text of a peers.json."""
    try:
        listed = msgspec.json.decode(raw, type=_Peers).peers
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PeerError(f"{source}: {exc}") from None
    keys = [p.key.encode("ascii", "replace") for p in listed]
    if len(set(keys)) != len(keys):
        raise PeerError(f"{source}: a key is listed twice")
    try:
        return check_peers({k: Identity(p.role, p.host) for k, p in zip(keys, listed, strict=True)})
    except PeerError as exc:
        raise PeerError(f"{source}: {exc}") from None


def encode_peers(peers: Mapping[bytes, Identity]) -> bytes:
    """The text of a peers.json listing `peers` (checked first)."""
    checked = check_peers(peers)
    listed = [
        _Peer(key=k.decode("ascii"), role=who.role, host=who.host)
        for k, who in sorted(checked.items(), key=lambda kv: (kv[1].role, kv[1].host))
    ]
    return msgspec.json.format(msgspec.json.encode(_Peers(peers=listed)))


def load_peers(directory: Path) -> dict[bytes, Identity]:
    """DIRECTORY/peers.json's map ({} without one)."""
    path = directory / PEERS_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    return parse_peers(raw, str(path))


def save_peers(directory: Path, peers: Mapping[bytes, Identity]) -> None:
    text = encode_peers(peers)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / PEERS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(text)
    os.replace(tmp, path)


def ensure_member(directory: Path, name: str, who: Identity) -> KeyPair:
    """Keypair NAME in DIRECTORY (made once), listed in peers.json as `who`."""
    pair = ensure_keypair(directory, name)
    peers = {k: v for k, v in load_peers(directory).items() if v != who}
    peers[pair.public] = who
    save_peers(directory, peers)
    return pair
