"""Is an address this machine's own? Shared by the CLI and the controller (pure)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for a name or address that never leaves this machine.

    `localhost` and its subdomains (RFC 6761 reserves them for loopback),
    127.0.0.0/8, ::1 and IPv4-mapped loopback. A wildcard (0.0.0.0, ::) is not
    loopback: a server bound there is reachable from the network.
    """
    h = host.strip().strip("[]").lower().rstrip(".")
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        addr = ipaddress.ip_address(h)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback
