"""The route table: which app answers a Host, and what the router knows about it.

Theory of operation: a `RouteTable` is immutable data built from the
controllers' `RouteSnapshot`/`RouteDelta` messages. Applying a change builds a
*new* table (sharing the untouched `AppEntry` objects with the old one) and the
worker swaps its reference in one assignment, so a request that already looked
up its entry keeps it (and its chosen backend) for its whole life, and no
request ever sees a half-applied change. Nothing here does I/O or blocks.

A delta touches a few apps of thousands, so a table built by one does not
copy the whole name and Host maps: each map is a shared `base` dict (never
changed once a table holds it) under a small `top` of what deltas changed
since (a name -> its entry, or None where one was removed). Lookups read the
top first. The top is copied per delta and folded into a new base once it
grows past an eighth of the base, so a delta costs about what it changes
(a copy of 3,000 apps and 6,000 hosts per delta was most of a router's work
under churn). `apps` and `hosts` give the whole maps as plain dicts, made on
first use (the certificate and bundle keepers, a snapshot's comparison).

Versions are authoritative: a delta applies only on top of exactly its
`base_version`; one that is already covered (version <= ours, e.g. the same
delta from the second controller) is ignored; anything else means we missed
something and must resync from a snapshot. A message carrying a lower fencing
token than the table's comes from a deposed controller and is ignored.

Host lookup order: exact hostnames from the routes (custom domains and any
explicit `APP.domain`), then `APP.<default domain>` by app name, then custom
wildcard hostnames (`*.example.com`), longest suffix first.
"""

from __future__ import annotations

import base64
import enum
import weakref
from collections.abc import Iterable
from typing import Any

from roost.wire.messages import AppRoute, Backend, RouteDelta, RouteSnapshot, StaticRoute

_CACHE_LIMIT = 4096
# A top folds into its base past max(this, an eighth of the base).
_TOP_MIN = 256


class AppEntry:
    """One app as the proxy needs it: precomputed so the request path is cheap.

    `rr` and `slots` are runtime state of the balancer (a rotation counter and
    the backends' live slots); they ride on the entry because the entry's
    identity changes exactly when its backend list does.
    """

    __slots__ = (
        "auth_tokens",
        "backends",
        "expires",
        "gzip",
        "hostnames",
        "label",
        "name",
        "plain",
        "realm",
        "route",
        "rr",
        "slots",
        "static",
        "suspended",
    )

    def __init__(self, route: AppRoute) -> None:
        self.route = route
        self.name = route.app
        self.label = route.app.encode()  # for the access log
        self.backends: tuple[Backend, ...] = tuple(route.backends)
        # Normalised once: a delta maps and unmaps them (and asks for wildcards).
        self.hostnames: tuple[str, ...] = tuple(_hostnames(route))
        self.suspended = route.suspended
        self.gzip = route.gzip
        # Longest prefix first so the most specific rule wins. (Most apps have
        # none of these three: a delta makes entries without the generators.)
        self.static: tuple[tuple[bytes, StaticRoute], ...] = ()
        if route.static:
            self.static = tuple(
                sorted(
                    ((s.url_prefix.encode(), s) for s in route.static if s.url_prefix),
                    key=lambda item: -len(item[0]),
                )
            )
        self.expires: tuple[tuple[bytes, int], ...] = ()
        if route.expires:
            self.expires = tuple(
                sorted(
                    ((p.encode(), int(s)) for p, s in route.expires.items()),
                    key=lambda x: -len(x[0]),
                )
            )
        self.auth_tokens: frozenset[bytes] = frozenset()
        if route.basic_auth:
            self.auth_tokens = frozenset(
                base64.b64encode(f"{user}:{password}".encode())
                for user, password in route.basic_auth.items()
            )
        self.realm = route.basic_auth_realm or "Restricted"
        # Nothing but proxying to do: the request path skips every feature check
        # (pending ACME answers are one: router/acme.py).
        self.plain = not (
            self.suspended
            or self.auth_tokens
            or self.static
            or self.expires
            or self.gzip
            or route.acme_challenges
        )
        self.rr = 0
        self.slots: Any = None

    def expires_for(self, path: bytes) -> int | None:
        for prefix, seconds in self.expires:
            if path.startswith(prefix):
                return seconds
        return None


def normalize_host(raw: bytes | str) -> str:
    """Lowercase host without port or trailing dot ("" when unusable)."""
    host = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    host = host.strip().lower()
    if host.startswith("["):  # IPv6 literal, maybe with a port
        end = host.find("]")
        return host[: end + 1] if end > 0 else ""
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        host = name
    return host.rstrip(".")


class RouteTable:
    """Immutable routes at one version. Build with `build_table`/`apply_*`."""

    __slots__ = (
        "__weakref__",
        "_apps",
        "_hosts",
        "apps_base",
        "apps_top",
        "base",
        "cache",
        "came",
        "default_domain",
        "fence",
        "gone",
        "hosts_base",
        "hosts_top",
        "version",
        "wildcards",
    )

    def __init__(
        self,
        version: int,
        fence: int,
        apps: dict[str, AppEntry],
        hosts: dict[str, AppEntry],
        default_domain: str,
        wildcards: tuple[tuple[str, AppEntry], ...] | None = None,
        apps_top: dict[str, AppEntry | None] | None = None,
        hosts_top: dict[str, AppEntry | None] | None = None,
    ) -> None:
        self.version = version
        self.fence = fence
        # (see the theory above: `apps` and `hosts` are base and top together)
        self.apps_base = apps
        self.hosts_base = hosts
        self.apps_top: dict[str, AppEntry | None] = apps_top or {}
        self.hosts_top: dict[str, AppEntry | None] = hosts_top or {}
        self._apps: dict[str, AppEntry] | None = None if self.apps_top else apps
        self._hosts: dict[str, AppEntry] | None = None if self.hosts_top else hosts
        self.default_domain = default_domain.lower().strip(".")
        if wildcards is None:
            wildcards = tuple(
                sorted(
                    ((h[1:], e) for h, e in self.hosts.items() if h.startswith("*.")),
                    key=lambda item: -len(item[0]),
                )
            )
        self.wildcards = wildcards
        # When built by a delta: the table it was built on (weakly: tables must
        # not chain in memory) and the entries that left and came.
        self.base: weakref.ref[RouteTable] | None = None
        self.gone: list[AppEntry] = []
        self.came: list[AppEntry] = []
        # Raw Host header -> entry, filled lazily; per table, so a swap
        # invalidates it for free.
        self.cache: dict[bytes, AppEntry | None] = {}

    @property
    def apps(self) -> dict[str, AppEntry]:
        """App name -> entry, whole (made once per table when it has a top)."""
        if self._apps is None:
            self._apps = _folded(self.apps_base, self.apps_top)
        return self._apps

    @property
    def hosts(self) -> dict[str, AppEntry]:
        """Hostname -> entry, whole (made once per table when it has a top)."""
        if self._hosts is None:
            self._hosts = _folded(self.hosts_base, self.hosts_top)
        return self._hosts

    def app(self, name: str) -> AppEntry | None:
        return _get(self.apps_base, self.apps_top, name)

    def lookup(self, raw_host: bytes) -> AppEntry | None:
        try:
            return self.cache[raw_host]
        except KeyError:
            pass
        entry = self._lookup(normalize_host(raw_host))
        if len(self.cache) >= _CACHE_LIMIT:
            self.cache.clear()  # bounded: scanners may send any Host
        self.cache[raw_host] = entry
        return entry

    def _lookup(self, host: str) -> AppEntry | None:
        if not host:
            return None
        entry = _get(self.hosts_base, self.hosts_top, host)
        if entry is not None:
            return entry
        suffix = "." + self.default_domain
        if self.default_domain and host.endswith(suffix):
            label = host[: -len(suffix)]
            if label and "." not in label:
                entry = _get(self.apps_base, self.apps_top, label)
                if entry is not None:
                    return entry
        for wild_suffix, wild_entry in self.wildcards:
            if host.endswith(wild_suffix) and len(host) > len(wild_suffix):
                return wild_entry
        return None

    def __len__(self) -> int:
        return len(self.apps)


_ABSENT: Any = object()


def _get(base: dict[str, AppEntry], top: dict[str, AppEntry | None], key: str) -> AppEntry | None:
    """A layered map's value (None: absent, or removed by a delta)."""
    entry = top.get(key, _ABSENT)
    if entry is _ABSENT:
        return base.get(key)
    return entry


def _folded(base: dict[str, AppEntry], top: dict[str, AppEntry | None]) -> dict[str, AppEntry]:
    whole = dict(base)
    for key, entry in top.items():
        if entry is None:
            whole.pop(key, None)
        else:
            whole[key] = entry
    return whole


def _put(
    base: dict[str, AppEntry], top: dict[str, AppEntry | None], key: str, entry: AppEntry | None
) -> None:
    """Set (or with None, remove) a layered map's key in its top; a key the
    base lacks needs no tombstone."""
    if entry is None and key not in base:
        top.pop(key, None)
    else:
        top[key] = entry


def empty_table(default_domain: str) -> RouteTable:
    return RouteTable(0, 0, {}, {}, default_domain)


def _hostnames(route: AppRoute) -> list[str]:
    return [h for h in (normalize_host(x) for x in route.hostnames) if h]


def build_table(
    version: int, fence: int, routes: Iterable[AppRoute], default_domain: str
) -> RouteTable:
    apps: dict[str, AppEntry] = {}
    for route in sorted(routes, key=lambda r: r.app):
        apps[route.app] = AppEntry(route)
    hosts: dict[str, AppEntry] = {}
    for entry in apps.values():  # sorted by name: a duplicate hostname resolves deterministically
        for h in entry.hostnames:
            hosts.setdefault(h, entry)
    return RouteTable(version, fence, apps, hosts, default_domain)


class Outcome(enum.Enum):
    APPLIED = "applied"
    IGNORED = "ignored"  # stale or duplicate: nothing to do
    RESYNC = "resync"  # we missed something: ask for a snapshot


def apply_snapshot(
    table: RouteTable, snap: RouteSnapshot, *, force: bool = False
) -> tuple[Outcome, RouteTable]:
    """A snapshot replaces the table unless it is not newer than what we have
    (the same version is the same table: versions are authoritative)."""
    if not force and (snap.fence, snap.version) <= (table.fence, table.version):
        return Outcome.IGNORED, table
    return Outcome.APPLIED, build_table(snap.version, snap.fence, snap.routes, table.default_domain)


def apply_delta(table: RouteTable, delta: RouteDelta) -> tuple[Outcome, RouteTable]:
    if delta.fence < table.fence:
        return Outcome.IGNORED, table  # from a deposed controller
    if delta.base_version != table.version:
        if delta.version <= table.version and delta.fence == table.fence:
            return Outcome.IGNORED, table  # already covered (duplicate publication)
        return Outcome.RESYNC, table
    apps, hosts = table.apps_base, table.hosts_base  # shared, never changed
    apps_top, hosts_top = dict(table.apps_top), dict(table.hosts_top)
    gone: list[AppEntry] = []
    came: list[AppEntry] = []
    for name in delta.removals:
        old = _get(apps, apps_top, name)
        if old is not None:
            _put(apps, apps_top, name, None)
            _unmap(hosts, hosts_top, old)
            gone.append(old)
    for route in delta.upserts:
        old = _get(apps, apps_top, route.app)
        if old is not None:
            _unmap(hosts, hosts_top, old)
            gone.append(old)
        entry = AppEntry(route)
        if old is not None:
            entry.rr = old.rr  # keep the rotation going across backend changes
        apps_top[route.app] = entry
        came.append(entry)
    for entry in came:
        for h in entry.hostnames:
            if _get(hosts, hosts_top, h) is None:  # (a Host already taken stays)
                hosts_top[h] = entry
    if len(apps_top) + len(hosts_top) > max(_TOP_MIN, (len(apps) + len(hosts)) // 8):
        apps, hosts = _folded(apps, apps_top), _folded(hosts, hosts_top)
        apps_top, hosts_top = {}, {}
    wildcards: tuple[tuple[str, AppEntry], ...] | None = table.wildcards
    if any(h.startswith("*.") for e in (*gone, *came) for h in e.hostnames):
        wildcards = None  # recompute
    new = RouteTable(
        delta.version,
        max(delta.fence, table.fence),
        apps,
        hosts,
        table.default_domain,
        wildcards,
        apps_top,
        hosts_top,
    )
    new.base = weakref.ref(table)
    new.gone, new.came = gone, came
    return Outcome.APPLIED, new


def _unmap(hosts: dict[str, AppEntry], top: dict[str, AppEntry | None], entry: AppEntry) -> None:
    for h in entry.hostnames:
        if _get(hosts, top, h) is entry:
            _put(hosts, top, h, None)


def changed_entries(old: RouteTable, new: RouteTable) -> tuple[list[AppEntry], list[AppEntry]]:
    """(entries only in `old`, entries only in `new`), compared by identity.

    Deltas share untouched entries between tables, so this costs one dict
    probe per app and yields just what a change touched.
    """
    if old is new or (old.apps_base is new.apps_base and old.apps_top is new.apps_top):
        return [], []
    if new.base is not None and new.base() is old:
        return new.gone, new.came  # built by a delta: it knows (no walk over every app)
    gone = [e for name, e in old.apps.items() if new.apps.get(name) is not e]
    came = [e for name, e in new.apps.items() if old.apps.get(name) is not e]
    return gone, came
