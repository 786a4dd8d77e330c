"""The tenant firewall: one nftables table, rendered from data (pure).

Theory of operation. Tenant processes share the host's network namespace
(instances serve on host ports), so the kernel must tell them apart from the
platform by the only thing it knows about a socket: its owner. Every tenant
uid lies in one range (`roost.tenant.identity`), and `meta skuid` matches it
in the OUTPUT hook, where a locally made packet still carries its socket.

OUTPUT, tenant sockets only (a packet with no full socket, such as the RST
the kernel sends for a closed port, is never taken for a tenant's):

- packets of connections already allowed pass (`ct state established`), so
  an instance answers the router, and only a new connection is judged;
- the app's own services (uid . address . port, from the platform's
  credentials, never from a config var) are allowed;
- to a *platform address* (any address of this host, loopback included, v4
  and v6; every host of the address book; the routers; the cloud metadata
  service) only DNS and the routers' public ports are allowed, everything
  else is refused. Default deny rather than a list of platform ports: an
  app's Redis, the PostgreSQL port chosen at first start, a daemon's metrics
  or exec port bound on port 0 all sit on ports the runner cannot name;
- anything else (the internet, another runner's address) is allowed.

INPUT: the instance port range takes connections only from the routers'
addresses and from the host itself (`iif lo`: on one host the router is
local). Loopback packets have no owner by the time they are received, which
is why the OUTPUT check above, not this one, stops a local tenant. Replies
to connections this host made from a port in the range pass too
(`ct direction reply`: conntrack's original direction is ours, so no remote
packet can claim it).

The whole table is replaced in one `nft -f` transaction: "table; delete
table; table {...}" creates it if missing, so the delete never fails, and the
kernel applies all three or none. A half-applied firewall never exists.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from roost.tenant.identity import TENANT_UID_MAX, TENANT_UID_MIN

# Cloud instance metadata (AWS, GCP, Azure, OpenStack; AWS's IPv6 one): it
# hands out the host's credentials to whoever asks, so no tenant may ask.
METADATA_ADDRESSES = ("169.254.169.254", "fd00:ec2::254")
DNS_PORT = 53
_TABLE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")

Address = ipaddress.IPv4Network | ipaddress.IPv6Network


class FirewallError(ValueError):
    """A plan that cannot be rendered (the message says which part and why)."""


@dataclass(frozen=True, order=True)
class Allowance:
    """Tenant `uid` may open TCP connections to `address`:`port` (its own service)."""

    uid: int
    address: str
    port: int


@dataclass(frozen=True)
class Plan:
    """Everything the table says, as data."""

    table: str = "roost"
    # Written into the table: who applied it (an owner check on removal).
    comment: str = ""
    tenant_uids: tuple[int, int] = (TENANT_UID_MIN, TENANT_UID_MAX)
    # (first, last) of the instance ports, or None: no INPUT chain at all.
    instance_ports: tuple[int, int] | None = None
    # Addresses (or networks) routers connect from; also where tenants may
    # reach the routers' public ports.
    routers: tuple[str, ...] = ()
    # Other hosts of the platform (this host's own addresses always count).
    platform: tuple[str, ...] = ()
    public_ports: tuple[int, ...] = ()
    allowances: tuple[Allowance, ...] = ()


def render(plan: Plan) -> str:
    """The `nft -f` input that replaces `plan.table` whole."""
    _check(plan)
    lo, hi = plan.tenant_uids
    routers = _split(plan.routers, "router address")
    platform = _split((*plan.platform, *METADATA_ADDRESSES, *plan.routers), "platform address")
    services = _services(plan.allowances)
    public = _port_set(plan.public_ports)
    name = plan.table
    out = [
        f"table inet {name}",
        f"delete table inet {name}",
        f"table inet {name} {{",
    ]
    if plan.comment:
        out.append(f'\tcomment "{plan.comment}"')
    for family in ("4", "6"):
        kind = f"ipv{family}_addr"
        out += _set(f"platform{family}", kind, platform[family], interval=True)
        out += _set(f"routers{family}", kind, routers[family], interval=True)
        out += _set(f"services{family}", f"uid . {kind} . inet_service", services[family])
    out += [
        "\tchain output {",
        "\t\ttype filter hook output priority filter; policy accept;",
        f"\t\tmeta skuid {lo}-{hi} jump tenant",
        "\t}",
        "\tchain tenant {",
        "\t\tct state established,related accept",
        "\t\tmeta skuid . ip daddr . tcp dport @services4 accept",
        "\t\tmeta skuid . ip6 daddr . tcp dport @services6 accept",
        "\t\tfib daddr type local jump platform",
        "\t\tip daddr @platform4 jump platform",
        "\t\tip6 daddr @platform6 jump platform",
        "\t}",
        "\tchain platform {",
        f"\t\tmeta l4proto {{ tcp, udp }} th dport {DNS_PORT} accept",
    ]
    if public:
        out += [
            f"\t\tfib daddr type local tcp dport {public} accept",
            f"\t\tip daddr @routers4 tcp dport {public} accept",
            f"\t\tip6 daddr @routers6 tcp dport {public} accept",
        ]
    out += [
        "\t\tmeta l4proto tcp reject with tcp reset",
        "\t\treject with icmpx admin-prohibited",
        "\t}",
    ]
    if plan.instance_ports is not None:
        first, last = plan.instance_ports
        ports = str(first) if first == last else f"{first}-{last}"
        out += [
            "\tchain input {",
            "\t\ttype filter hook input priority filter; policy accept;",
            f"\t\ttcp dport {ports} jump instances",
            "\t}",
            "\tchain instances {",
            '\t\tiif "lo" accept',
            "\t\tct direction reply accept",
            "\t\tip saddr @routers4 accept",
            "\t\tip6 saddr @routers6 accept",
            "\t\treject with tcp reset",
            "\t}",
        ]
    out.append("}")
    return "\n".join(out) + "\n"


def removal(table: str = "roost") -> str:
    """The `nft -f` input that removes `table` (and succeeds when it is absent)."""
    _check_table(table)
    return f"table inet {table}\ndelete table inet {table}\n"


def parse_address(text: str, what: str = "address") -> Address:
    """An IP address or network ("10.0.0.5", "fd00::/64", "[::1]")."""
    raw = text.strip()
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    try:
        return ipaddress.ip_network(raw, strict=False)
    except ValueError:
        raise FirewallError(f"{what} {text!r} is not an IP address or network") from None


def parse_endpoints(text: str) -> list[tuple[str, int]]:
    """`"HOST:PORT HOST:PORT"` (IPv6 hosts in brackets) as (host, port) pairs."""
    out: list[tuple[str, int]] = []
    for item in text.split():
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise FirewallError(f"service address {item!r} is not HOST:PORT")
        out.append((host.removeprefix("[").removesuffix("]"), int(port)))
    return out


def _check(plan: Plan) -> None:
    _check_table(plan.table)
    if any(c in plan.comment for c in '"\\\n\r') or len(plan.comment) > 128:
        raise FirewallError(
            "the table comment must be one line of at most 128 characters, no quotes"
        )
    lo, hi = plan.tenant_uids
    if not 0 < lo <= hi < 2**32:
        raise FirewallError(f"tenant uid range {lo}-{hi} is not a range of uids")
    if plan.instance_ports is not None:
        first, last = plan.instance_ports
        if not 0 < first <= last < 65536:
            raise FirewallError(f"instance port range {first}-{last} is not a range of ports")
    for port in plan.public_ports:
        _check_port(port, "public port")
    for a in plan.allowances:
        if not lo <= a.uid <= hi:
            raise FirewallError(f"allowance for uid {a.uid}: not a tenant uid ({lo}-{hi})")
        _check_port(a.port, "service port")
        net = parse_address(a.address, "service address")
        if net.num_addresses != 1:
            raise FirewallError(f"service address {a.address!r} must be one address")


def _check_table(table: str) -> None:
    if not _TABLE_NAME.fullmatch(table):
        raise FirewallError(f"table name {table!r} must match {_TABLE_NAME.pattern}")


def _check_port(port: int, what: str) -> None:
    if not 0 < port < 65536:
        raise FirewallError(f"{what} {port} is not a TCP port")


def _split(addresses: Iterable[str], what: str) -> dict[str, list[str]]:
    """Addresses by family, collapsed and sorted: an interval set refuses
    overlapping elements, and the output stays the same for the same input."""
    nets = [parse_address(a, what) for a in addresses]
    v4 = ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv4Network))
    v6 = ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv6Network))
    return {"4": [_show(n) for n in v4], "6": [_show(n) for n in v6]}


def _show(net: Address) -> str:
    return str(net.network_address) if net.num_addresses == 1 else str(net)


def _services(allowances: Iterable[Allowance]) -> dict[str, list[str]]:
    out: dict[str, set[str]] = {"4": set(), "6": set()}
    for a in allowances:
        net = parse_address(a.address, "service address")
        out[str(net.version)].add(f"{a.uid} . {net.network_address} . {a.port}")
    return {family: sorted(items) for family, items in out.items()}


def _set(name: str, kind: str, elements: list[str], interval: bool = False) -> list[str]:
    lines = [f"\tset {name} {{", f"\t\ttype {kind}"]
    if interval:
        lines.append("\t\tflags interval")
    if elements:
        lines.append(f"\t\telements = {{ {', '.join(elements)} }}")
    lines.append("\t}")
    return lines


def _port_set(ports: Iterable[int]) -> str:
    unique = sorted(set(ports))
    if not unique:
        return ""
    return str(unique[0]) if len(unique) == 1 else "{ " + ", ".join(map(str, unique)) + " }"
