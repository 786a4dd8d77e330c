"""Which custom domains an app may have. Pure: no store, no I/O.

Every app answers at `APP.<default domain>` (the router finds it by the app's
name), so the default domain's namespace belongs to the platform. A custom
domain at or under it could take over another app's hostname, or a name a
future app will get; so the default domain itself and every name under it
are refused, except names *under the app's own hostname*
(`www.shop.localhost` for app `shop`): app names have no dots, so no other
app can ever be reached there, and the app's own default hostname is always
routed already (adding it is refused as redundant, to keep one source for
it). Heroku refuses every herokuapp.com name; allowing an app its own
subdomains costs nothing and keeps `www.` aliases possible on one-host
platforms.

A wildcard (`*.example.com`, which the router already supports) is judged
by the names it matches: one whose suffix covers the default domain (e.g.
`*.example.com` when apps live at `APP.apps.example.com`) would answer for
every app name not yet created, so it is refused like the names themselves.

Names are normalised first (surrounding space, trailing dot, case,
internationalised labels to their `xn--` form), so `OTHER.LOCALHOST.` is
`other.localhost`; IP literals are refused, since Host routing by address
would take every request sent to the router's address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

# After normalisation: LDH labels, a TLD that is not all digits, 253 at most.
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"([a-z]{2,63}|xn--[a-z0-9-]{1,59})$"
)


class DomainRefused(Exception):
    """A custom domain the app may not have; `status` is the HTTP answer."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def normalize(raw: str) -> str:
    """Lower-case ASCII form of a hostname (`xn--` labels for IDNs), no trailing dot.

    Raises DomainRefused when it cannot be a hostname at all.
    """
    host = raw.strip().rstrip(".")
    if not host or any(c.isspace() for c in host):
        raise DomainRefused(f"invalid hostname {raw!r}")
    labels = host.split(".")
    out = []
    for label in labels:
        if label == "*" or label.isascii():
            out.append(label.lower())
            continue
        try:
            out.append(label.encode("idna").decode("ascii").lower())
        except UnicodeError:
            raise DomainRefused(f"invalid hostname {raw!r}: bad label {label!r}") from None
    return ".".join(out)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _at_or_under(host: str, base: str) -> bool:
    return host == base or host.endswith("." + base)


def check_domain(raw: str, app: str, default_domain: str) -> str:
    """The normalised custom domain `raw` for `app`, or DomainRefused (422).

    Ownership by another app (409) is the store's check: it needs the table.
    """
    default = normalize(default_domain) if default_domain else ""
    host = normalize(raw)
    if _is_ip(host):
        raise DomainRefused(f"{raw!r} is an IP address: a custom domain must be a hostname")
    if "*" in host and not (host.startswith("*.") and "*" not in host[2:]):
        raise DomainRefused(
            f"invalid hostname {raw!r}: a wildcard is one leading '*.' label (*.example.com)"
        )
    if not _HOSTNAME.match(host):
        raise DomainRefused(f"invalid hostname {raw!r}")
    if not default:
        return host
    own = f"{app}.{default}"
    if host == own:
        raise DomainRefused(f"{host} is {app}'s default hostname: it is always routed to {app}")
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    if _at_or_under(name, own):
        return host  # the app's own subdomains: no other app can ever be there
    if _at_or_under(name, default) or (wildcard and _at_or_under(default, name)):
        raise DomainRefused(
            f"{host} is in the platform's domain {default}: apps get APP.{default} "
            f"automatically, and other names there are reserved (use a domain of your own, "
            f"or a name under {own})"
        )
    return host


def default_host(app: str, default_domain: str) -> str:
    """`APP.<default domain>`: where the router always finds the app."""
    return f"{app}.{default_domain.strip().rstrip('.').lower()}"


def routable_domains(app: str, domains: Iterable[str], default_domain: str) -> tuple[str, ...]:
    """The custom domains the router may send to `app` (defence in depth).

    A row written before `check_domain` existed (or by any other path) that
    names another app's default hostname, or anything the policy refuses,
    is left out: the default hostname always reaches its own app.
    """
    out = []
    for d in domains:
        try:
            if check_domain(d, app, default_domain) == d:
                out.append(d)
        except DomainRefused:
            continue
    return tuple(out)
