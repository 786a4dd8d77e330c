"""A log drain's address, checked when it is added (pure).

Three kinds, as Heroku's drains: `syslog://host:port` (RFC 5424 over plain
TCP), `syslog+tls://host:port` (the same over TLS, the server's certificate
checked against its name) and `https://host[:port]/path` (batches POSTed).
A URL that cannot name a receiver is refused with the reason; one that
names a receiver nobody answers at is accepted (it may come up later) and
shows as failing in `roost drains list`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL = 2048
KINDS = ("syslog", "syslog+tls", "https")
# A DNS name: labels of letters, digits and hyphens (not at either end).
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class BadDrainUrl(ValueError):
    """A drain URL refused when added; the message says why."""


@dataclass(frozen=True)
class DrainTarget:
    kind: str  # one of KINDS
    host: str
    port: int
    url: str  # as given, for HTTPS the address POSTed to

    @property
    def tls(self) -> bool:
        return self.kind != "syslog"


def parse_drain_url(url: str) -> DrainTarget:
    """The drain `url` names, or BadDrainUrl saying why it cannot be one."""
    if not url or len(url) > MAX_URL:
        raise BadDrainUrl(f"a drain URL has 1 to {MAX_URL} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise BadDrainUrl("a drain URL has no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadDrainUrl(f"malformed drain URL: {exc}") from None
    kind = parts.scheme.lower()
    if kind not in KINDS:
        raise BadDrainUrl(
            f"drain URLs start with syslog://, syslog+tls:// or https://, not {kind or 'nothing'}"
        )
    host = parts.hostname or ""
    if not host:
        raise BadDrainUrl("a drain URL names a host")
    _check_host(host)
    if kind == "https":
        return DrainTarget(kind, host, port or 443, url)
    if port is None:
        raise BadDrainUrl(f"a {kind}:// drain names its port (syslog://host:514)")
    if parts.username is not None or parts.password is not None:
        raise BadDrainUrl(f"a {kind}:// drain carries no user or password")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BadDrainUrl(f"a {kind}:// drain is host:port only, with no path or query")
    return DrainTarget(kind, host, port, url)


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise BadDrainUrl(f"{host!r} is neither a host name nor an IP address")


PRIVATE_HINT = "set ROOST_LOG_DRAIN_PRIVATE=on to allow drains on the platform's own networks"


def address_refusal(ip: str) -> str | None:
    """Why a drain may not connect to `ip` (None: it may): public unicast only."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_global and not addr.is_multicast:
        return None
    return f"{ip} is not a public address ({PRIVATE_HINT})"


def target_refusal(target: DrainTarget) -> str | None:
    """Why `target` is refused when added without private addresses allowed:
    an address (or localhost) that is not public. Other names are checked
    when they are resolved."""
    if target.host.rstrip(".").lower() == "localhost" or target.host.endswith(".localhost"):
        return f"{target.host} is this host ({PRIVATE_HINT})"
    try:
        return address_refusal(target.host)
    except ValueError:
        return None  # a name
