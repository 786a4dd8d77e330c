"""Which addresses the servers listen on, and which one apps are told (pure).

The servicehost's own cluster endpoint address (`public_host`, from
cluster.json) is by construction reachable from the other hosts, so the
servers listen there too and apps are given it, unless ROOST_SERVICES_HOST
names another. Loopback is always listened on: the daemon's admin
connections use it.
"""

from __future__ import annotations

WILDCARDS = ("", "0.0.0.0", "::", "*")
LOOPBACK = "127.0.0.1"


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def listen_hosts(bind_host: str, public_host: str = "") -> list[str]:
    """["*"] for every interface, else loopback plus the non-loopback hosts given."""
    if bind_host in WILDCARDS:
        return ["*"]
    hosts = [LOOPBACK]
    for h in (bind_host, public_host):
        if h and not _is_loopback(h) and h not in hosts:
            hosts.append(h)
    return hosts


def advertised_host(services_host: str, bind_host: str, public_host: str = "") -> str:
    if services_host:
        return services_host
    if public_host and public_host not in WILDCARDS:
        return public_host
    if bind_host in WILDCARDS or bind_host == "localhost":
        return LOOPBACK
    return bind_host
